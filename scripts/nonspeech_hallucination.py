"""Beyond the paper: Whisper's non-speech hallucinations, and four remedies on one test set.

Whisper writes fluent text for noise, music and silence ("you", "Thank you."). [BT] §4.2 shows a
decoder probe separates speech from non-speech (100 % at layers 10-28 of large-v3); later work
masked decoder self-attention heads (Calm-Whisper) or steered encoder SAE features. Here all of
them run on one test set, each choosing what it needs on the *select* half and reported on both
halves (the *held-out* half never influenced a choice):

  (a) as is        greedy transcription, no gate;
  (b) monitor      a linear probe on the decoder's end-of-text residual (speech vs non-speech,
                   trained on the select half, layer with the best split accuracy) flags the
                   output; a flagged transcript counts as empty ("no speech");
  (c) head mask    every decoder self-attention head zero-ablated, one at a time, by the
                   library's own sweep (``hooked_asr.patching.sweep``); heads ranked by
                   (share of non-speech outputs emptied) - w * (speech WER increase); the top
                   1..K heads masked together, the set with the best objective kept;
  (d) SAE steering a TopK SAE trained on the select half's encoder frames; "non-speech" features
                   = largest mean activation on non-speech minus speech frames; edit (scale or
                   add) chosen on the select half; steered with the SAE error kept;
  (e) probe steer  an encoder probe (mean over frames, speech vs non-speech) gives a direction
                   d; every encoder frame at that layer moves by - beta * gap * d (gap = the
                   classes' mean projection difference), beta chosen on the select half.

Whisper's greedy decoding suppresses end-of-text at the first step (openai-whisper's
``suppress_blank``; ``cfg.begin_suppress_tokens``), so an output is never empty: a clip counts as
no hallucination when the output has no word (e.g. "..."). Heads are therefore ranked by the
first-step *non-word margin*, ``logsumexp_{v in non-word} log p(v) - logsumexp_{v in word} log p(v)``
(teacher-forced, one forward per head and clip), which a remedy must raise on non-speech and
keep low on speech; candidates are then confirmed by transcribing. Objective for every final
choice: hallucination rate + w * speech WER (``--wer-weight``, default 1).
Test set: non-speech clips (white / pink / brown noise, tones, chirps, synthetic music, near-
silence at -70 dBFS, music + white noise at 0 dB SNR), ``--n-per-kind`` of each per half, plus
``--n-speech`` espeak-ng sentences per half (different sentences in the two halves).
Hallucination = at least one word in the output for a non-speech clip.

Writes ``<out>/table.{csv,json}`` (method x half: hallucination rate, speech WER, what was
chosen), ``<out>/per_kind.csv``, ``<out>/nonspeech_hallucination.png`` and ``<out>/outputs.csv``.

    python scripts/nonspeech_hallucination.py --n-per-kind 4 --n-speech 8 --out results/nonspeech
    python scripts/nonspeech_hallucination.py --n-per-kind 1 --n-speech 2 --out /tmp/x    # CI size
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _common
import numpy as np
import torch

KINDS = ("white", "pink", "brown", "tone", "chirp", "music", "silence", "music+noise")
METHODS = ("as is", "probe monitor", "head masking", "SAE steering", "probe direction")
TABLE_COLUMNS = ("method", "split", "hallucination rate", "n non-speech", "speech WER", "n speech", "chosen")


def parse_args(argv=None):
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--n-per-kind", type=int, default=4, help="non-speech clips per kind per half")
    ap.add_argument("--n-speech", type=int, default=8, help="speech controls per half")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each non-speech clip")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-heads", type=int, default=6, help="K: masks of the top 1..K heads are tried")
    ap.add_argument("--enc-layer", type=int, default=-1, help="encoder block for the SAE and the probe direction")
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=3.0, help="SAE passes over the select half's frames")
    ap.add_argument("--n-features", type=int, default=4, help="non-speech SAE features edited")
    ap.add_argument("--wer-weight", type=float, default=1.0)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="non-speech kinds")
    ap.add_argument(
        "--sae-scales",
        nargs="*",
        type=float,
        default=[2.0, 4.0, 8.0],
        help="candidate edits: scale the non-speech features by these factors",
    )
    ap.add_argument(
        "--sae-adds",
        nargs="*",
        type=float,
        default=[1.0, 3.0],
        help="candidate edits: add this many times their mean non-speech activation",
    )
    ap.add_argument(
        "--betas",
        nargs="+",
        type=float,
        default=[0.5, 1.0, 2.0],
        help="candidate shifts along the probe direction, in units of the class gap",
    )
    ap.add_argument("--out", default="results/nonspeech")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


# ---- data ------------------------------------------------------------------------------------
def make_half(
    split: str, n_per_kind: int, n_speech: int, seconds: float, seed: int, kinds: tuple[str, ...] = KINDS
) -> list[dict]:
    """Non-speech clips of every kind, then espeak speech (the two halves use disjoint sentences)."""
    from hooked_asr.datasets import SENTENCES
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.datasets.nonspeech import mix_at_snr, nonspeech_clip, white_noise

    base = seed * 7919 + (0 if split == "select" else 100_000)
    items = []
    for kind in kinds:
        for j in range(n_per_kind):
            s = base + 31 * KINDS.index(kind) + j
            if kind == "silence":
                # a quiet room (-70 dBFS peak): the library refuses quieter input (< -80 dBFS) as digital silence
                audio = white_noise(seconds, seed=s, peak=10 ** (-70 / 20))
            elif kind == "music+noise":
                audio = mix_at_snr(nonspeech_clip("music", seconds, s), nonspeech_clip("white", seconds, s + 1), 0.0)
            else:
                audio = nonspeech_clip(kind, seconds, s, peak=float(np.random.default_rng(s).uniform(0.2, 0.8)))
            items.append({"split": split, "kind": kind, "speech": 0, "text": "", "audio": audio.astype(np.float32)})
    half = len(SENTENCES) // 2
    pool = SENTENCES[:half] if split == "select" else SENTENCES[half:]
    voices = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
    for j in range(n_speech):
        text = pool[j % len(pool)]
        items.append(
            {
                "split": split,
                "kind": "speech",
                "speech": 1,
                "text": text,
                "audio": synthesize(text, voice=voices[j % len(voices)]),
            }
        )
    return items


# ---- scoring ---------------------------------------------------------------------------------
def n_words(text: str) -> int:
    from hooked_asr.text import normalize_text

    return len(normalize_text(text or "").split())


def score(items: list[dict], texts: list[str]) -> dict:
    """Hallucination rate on the non-speech clips, corpus WER on the speech clips."""
    from hooked_asr.text import corpus_word_error_rate as word_error_rate

    ns = [n_words(t) > 0 for it, t in zip(items, texts) if not it["speech"]]
    sp = [(it["text"], t) for it, t in zip(items, texts) if it["speech"]]
    wer = word_error_rate([r for r, _ in sp], [h for _, h in sp]) if sp else float("nan")
    return {
        "hallucination rate": float(np.mean(ns)) if ns else float("nan"),
        "n non-speech": len(ns),
        "speech WER": float(wer),
        "n speech": len(sp),
    }


def objective(s: dict, w: float) -> float:
    return s["hallucination rate"] + w * s["speech WER"]


def transcribe(model, items: list[dict], max_new_tokens: int) -> list[str]:
    """The one place this script decodes (greedy, the library's ``transcribe``)."""
    out = model.transcribe(
        [it["audio"] for it in items], max_new_tokens=max_new_tokens, allow_silence=True
    )  # silence is part of the non-speech set on purpose
    return [r.text for r in out]


# ---- remedies --------------------------------------------------------------------------------
def fit_monitor(model, select: list[dict], out: Path, args):
    """(b): decoder end-of-text probe, speech (1) vs non-speech (0), best layer on a split of select."""
    from hooked_asr.activations import extract_activations
    from hooked_asr.datasets import LabelledDataset
    from hooked_asr.monitors import ProbeMonitor
    from hooked_asr.probing import model_hooks, probe_layers, train_probe

    ds = LabelledDataset.from_items(
        [{"audio": it["audio"], "label": it["speech"], "kind": it["kind"]} for it in select],
        label_names=["nonspeech", "speech"],
    )
    hooks = model_hooks(model, "decoder")
    store = extract_activations(
        model,
        ds,
        hooks,
        out / "acts" / "decoder",
        max_new_tokens=args.max_new_tokens,
        dataset_id=f"nonspeech-select|{args.model}|{args.seed}|{len(select)}",
        progress=False,
    )
    counts = np.bincount(np.asarray(store.labels("label")), minlength=2)
    # a layer is chosen on a split of the select half when each class has 2 clips, else on training accuracy
    sweep = probe_layers(store, hooks=hooks, test_size=0.3 if counts.min() >= 2 else 0.0, seed=args.seed)
    best = sweep.best_layer
    probe = train_probe(store.load(best), store.labels("label"))
    return ProbeMonitor("speech", probe, best, positive=1), sweep


def word_token_masks(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over the vocabulary: ordinary tokens with a letter or digit (words) and
    those without (punctuation, spaces); special tokens (id >= end of text) are in neither."""
    V = model.cfg.d_vocab
    eos = model.cfg.eos_token_id
    word = torch.zeros(V, dtype=torch.bool)
    for i in range(min(eos, V)):
        word[i] = any(ch.isalnum() for ch in model.tokenizer.decode([i]))
    nonword = ~word
    nonword[eos:] = False
    for t in model.cfg.begin_suppress_tokens:
        nonword[t] = False  # suppressed at the first step: not a possible first token
    return word, nonword


def nonword_margin_metric(model):
    """``fn(logits, tf, item) -> [batch]``: the first-step non-word margin (a sweep metric)."""
    word, nonword = word_token_masks(model)

    def fn(logits: torch.Tensor, tf, item) -> torch.Tensor:  # noqa: ARG001
        lp = torch.log_softmax(logits[:, tf.prompt_len - 1].float(), dim=-1)
        return torch.logsumexp(lp[:, nonword.to(lp.device)], -1) - torch.logsumexp(lp[:, word.to(lp.device)], -1)

    return fn


def choose_heads(model, select: list[dict], base_texts: list[str], args):
    """(c): the library's zero-ablation sweep over decoder self-attention heads (teacher-forced,
    non-word margin), then masks of the top 1..K heads confirmed by transcribing.

    ``base_texts``: the unmasked select transcripts (already made). Returns the chosen heads,
    their select transcripts (greedy decoding is deterministic, so they need not be redone) and
    the sweep's ranking with every trial."""
    from hooked_asr.patching import SweepItem, components, patched, sweep, zero_ablate

    heads = components(model, kinds=["attn"], stacks=["decoder"], heads=True)
    items = [
        SweepItem(f"{i}-{it['kind']}", it["audio"], text=it["text"] or None, extra={"speech": it["speech"]})
        for i, it in enumerate(select)
    ]
    res = sweep(
        model,
        items,
        heads,
        "zero",
        mode="teacher_forced",
        metrics={"margin": nonword_margin_metric(model)},
        max_new_tokens=args.max_new_tokens,
        progress=True,
    )
    t = res.table
    speech_ids = {it.id for it in items if it.extra["speech"]}
    rank = []
    for comp, g in t.groupby("component"):
        delta = g["value"] - g["clean"]
        ns = float(delta[~g["item"].isin(speech_ids)].mean())
        sp = float(delta[g["item"].isin(speech_ids)].mean()) if g["item"].isin(speech_ids).any() else 0.0
        rank.append((ns - args.wer_weight * max(sp, 0.0), ns, sp, comp))
    rank.sort(key=lambda r: -r[0])
    best, trials = ([], score(select, base_texts), base_texts), []
    for k in range(1, min(args.max_heads, len(rank)) + 1):
        chosen = [r[3] for r in rank[:k]]
        with patched(model, [zero_ablate(c) for c in chosen]):
            texts = transcribe(model, select, args.max_new_tokens)
        s = score(select, texts)
        trials.append({"heads": chosen, **s})
        if objective(s, args.wer_weight) < objective(best[1], args.wer_weight):
            best = (chosen, s, texts)
    return (
        best[0],
        best[2],
        {
            "sweep_rank": [
                {"head": r[3], "score": r[0], "margin_gain_nonspeech": r[1], "margin_gain_speech": r[2]}
                for r in rank[:10]
            ],
            "trials": trials,
        },
    )


def train_sae(model, select: list[dict], hook: str, args):
    """(d): a small TopK SAE on the select half's encoder frames (audio frames + a few padding frames)."""
    import tempfile

    from hooked_asr.sae import (
        CachedFrameSource,
        ModelFrameSource,
        SAEConfig,
        SAETrainer,
        SparseAutoencoder,
        TrainConfig,
    )

    clips = [it["audio"] for it in select]
    source = ModelFrameSource(model, clips, hook, batch_size=4, pad_frames=8)
    total = int(args.epochs * sum(source.clip_frames(c) for c in clips))
    d = model.cfg.encoder.d_model
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=d,
            d_sae=args.expansion * d,
            architecture="topk",
            k=args.k,
            hook_name=hook,
            model_name=args.model,
            dead_after_frames=max(total // 4, 2000),
        ),
        seed=args.seed,
    )
    trainer = SAETrainer(sae, TrainConfig(total_frames=total, batch_size=256, lr=1e-3, buffer_frames=4096))
    # The trainer passes over the frames several times (epochs, and a shuffle buffer larger than
    # the select half): the encoder runs once, the later passes read its frames back. A fresh
    # folder per run, since the cache cannot tell another run's frames from these.
    with tempfile.TemporaryDirectory(prefix="nonspeech-sae-frames-") as tmp:
        trainer.train(CachedFrameSource(source, tmp))
    return sae.eval(), trainer.state.history[-1]


@torch.no_grad()
def class_means(model, sae, items: list[dict], hook: str) -> tuple[torch.Tensor, torch.Tensor]:
    from hooked_asr.sae import ModelFrameSource

    means = []
    for label in (0, 1):
        clips = [it["audio"] for it in items if it["speech"] == label]
        acc, n = torch.zeros(sae.d_sae), 0
        for x in ModelFrameSource(model, clips, hook, batch_size=4, pad_frames=0):
            acc += sae.encode(x).sum(0)
            n += len(x)
        means.append(acc / max(n, 1))
    return means[0], means[1]  # non-speech, speech


def choose_sae_edit(model, sae, select, hook, args):
    from hooked_asr.sae.steering import FeatureIntervention, steer

    m_ns, m_sp = class_means(model, sae, select, hook)
    feats = [int(i) for i in (m_ns - m_sp).topk(args.n_features).indices]
    push = float(m_ns[feats].mean())
    edits = [("scale", c) for c in args.sae_scales] + [("add", a * push) for a in args.sae_adds]
    if not edits:
        raise SystemExit("no SAE edits to try: give --sae-scales and/or --sae-adds")
    best, trials = None, []
    for mode, value in edits:
        with steer(model, sae, [FeatureIntervention(feats, mode, value)]):
            texts = transcribe(model, select, args.max_new_tokens)
        s = score(select, texts)
        trials.append({"mode": mode, "value": value, **s})
        if best is None or objective(s, args.wer_weight) < objective(best[1], args.wer_weight):
            best = ((mode, value), s, texts)
    return feats, best[0], best[2], trials


def choose_probe_direction(model, select, hook, out: Path, args):
    """(e): encoder probe (mean over audio frames) -> unit direction d (speech side) and class gap."""
    from hooked_asr.activations import extract_activations
    from hooked_asr.datasets import LabelledDataset
    from hooked_asr.probing import train_probe

    ds = LabelledDataset.from_items(
        [{"audio": it["audio"], "label": it["speech"]} for it in select], label_names=["nonspeech", "speech"]
    )
    store = extract_activations(
        model,
        ds,
        [hook],
        out / "acts" / "encoder",
        progress=False,
        dataset_id=f"nonspeech-select-enc|{args.model}|{args.seed}|{len(select)}",
    )
    X, y = store.load(hook).float(), np.asarray(store.labels("label"))
    probe = train_probe(X, y)
    d = probe.direction.float()  # raw space, towards the last class (speech)
    proj = (X @ d).numpy()
    gap = float(proj[y == 1].mean() - proj[y == 0].mean())
    best, trials = None, []
    for beta in args.betas:
        with _shifted(model, hook, -beta * gap * d):
            texts = transcribe(model, select, args.max_new_tokens)
        s = score(select, texts)
        trials.append({"beta": beta, **s})
        if best is None or objective(s, args.wer_weight) < objective(best[1], args.wer_weight):
            best = (beta, s, texts)
    return d, gap, best[0], best[2], trials


def _shifted(model, hook: str, delta: torch.Tensor):
    """Add ``delta`` to every frame of ``hook`` (a context manager over the model's hook API)."""

    def fn(x, hook):  # noqa: ARG001
        return x + delta.to(x.dtype).to(x.device)

    return model.hooks(fwd_hooks=[(hook, fn)])


# ---- main ------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    model, out, t0 = _common.setup(args)
    name = args.model
    L = model.n_layers["encoder"]
    layer = args.enc_layer % L
    hook = f"encoder.blocks.{layer}.hook_resid_post"
    kinds = tuple(args.kinds)
    halves = {
        s: make_half(s, args.n_per_kind, args.n_speech, args.seconds, args.seed, kinds) for s in ("select", "held-out")
    }
    select = halves["select"]
    print(
        f"{name}: {len(select)} clips per half ({len(kinds)} non-speech kinds x {args.n_per_kind}, "
        f"{args.n_speech} speech); SAE / probe direction at {hook}"
    )

    texts: dict[tuple[str, str], list[str]] = {}
    chosen: dict[str, str] = {}
    for s, items in halves.items():
        texts[("as is", s)] = transcribe(model, items, args.max_new_tokens)
    chosen["as is"] = "-"

    from hooked_asr.monitors import transcribe_with_monitors

    monitor, msweep = fit_monitor(model, select, out, args)
    for s, items in halves.items():
        res = transcribe_with_monitors(
            model, [it["audio"] for it in items], [monitor], max_new_tokens=args.max_new_tokens
        )
        texts[("probe monitor", s)] = ["" if r.extra["monitor_labels"]["speech"] == 0 else r.text for r in res]
    r0 = msweep.results[monitor.hook_name]
    chosen["probe monitor"] = f"{monitor.hook_name} (select-split acc {r0.test_acc if r0.n_test else r0.train_acc:.2f})"

    from hooked_asr.patching import patched, zero_ablate

    held_out = halves["held-out"]
    heads, texts[("head masking", "select")], head_info = choose_heads(model, select, texts[("as is", "select")], args)
    with patched(model, [zero_ablate(h) for h in heads]):
        texts[("head masking", "held-out")] = transcribe(model, held_out, args.max_new_tokens)
    chosen["head masking"] = (
        " ".join(h.replace("decoder.blocks.", "L").replace(".attn.head.", "H") for h in heads) or "none helped"
    )

    from hooked_asr.sae.steering import FeatureIntervention, steer

    sae, last = train_sae(model, select, hook, args)
    feats, (mode, value), texts[("SAE steering", "select")], sae_trials = choose_sae_edit(
        model, sae, select, hook, args
    )
    with steer(model, sae, [FeatureIntervention(feats, mode, value)]):
        texts[("SAE steering", "held-out")] = transcribe(model, held_out, args.max_new_tokens)
    chosen["SAE steering"] = f"features {feats} {mode} {value:.3g} (SAE FVU {last['fvu']:.2f})"

    d, gap, beta, texts[("probe direction", "select")], dir_trials = choose_probe_direction(
        model, select, hook, out, args
    )
    with _shifted(model, hook, -beta * gap * d):
        texts[("probe direction", "held-out")] = transcribe(model, held_out, args.max_new_tokens)
    chosen["probe direction"] = f"beta {beta} x gap {gap:.2f}"

    rows, per_kind, outputs = [], [], []
    for method in METHODS:
        for s, items in halves.items():
            t = texts[(method, s)]
            rows.append({"method": method, "split": s, **score(items, t), "chosen": chosen[method]})
            for kind in kinds:
                ks = [n_words(x) > 0 for it, x in zip(items, t) if it["kind"] == kind]
                per_kind.append({"method": method, "split": s, "kind": kind, "hallucination rate": float(np.mean(ks))})
            outputs += [
                {"method": method, "split": s, "kind": it["kind"], "reference": it["text"], "output": x}
                for it, x in zip(items, t)
            ]
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table.to_csv(out / "table.csv", index=False)
    pd.DataFrame(per_kind).to_csv(out / "per_kind.csv", index=False)
    pd.DataFrame(outputs).to_csv(out / "outputs.csv", index=False)
    report = {
        "model": name,
        "hook": hook,
        "args": vars(args),
        "rows": rows,
        "held_out_hallucination_rate": {r["method"]: r["hallucination rate"] for r in rows if r["split"] == "held-out"},
        "heads": head_info,
        "sae_trials": sae_trials,
        "direction_trials": dir_trials,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "table.json").write_text(json.dumps(report, indent=1, default=str))
    _plot(table, out / "nonspeech_hallucination.png", name)
    print()
    _common.print_table(
        table, title=f"Non-speech hallucinations, {name} (chosen on 'select', also reported on 'held-out')"
    )
    print("\nexamples (select half, first clip of each kind):")
    for kind in kinds:
        i = next(j for j, it in enumerate(select) if it["kind"] == kind)
        print(f"  {kind:<12} " + " | ".join(f"{m}: {texts[(m, 'select')][i]!r}" for m in METHODS))
    print(
        f"wrote {out}/table.csv, table.json, per_kind.csv, outputs.csv, nonspeech_hallucination.png "
        f"({time.time() - t0:.0f} s)"
    )
    return report


def _plot(table, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(METHODS))
    for ax, col in zip(axes, ("hallucination rate", "speech WER")):
        for j, s in enumerate(("select", "held-out")):
            v = [float(table[(table.method == m) & (table.split == s)][col].iloc[0]) for m in METHODS]
            ax.bar(x + (j - 0.5) * 0.38, v, 0.38, label=s)
        ax.set_xticks(x, METHODS, rotation=20, ha="right")
        ax.set_ylabel(col)
        ax.set_ylim(0, max(1.0, float(table[col].max()) * 1.05))
        ax.legend(fontsize=8)
    axes[0].set_title(f"non-speech clips transcribed as words - {name}", fontsize=9)
    axes[1].set_title("speech controls: WER", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
