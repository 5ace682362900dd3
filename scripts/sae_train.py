"""Train a sparse autoencoder on the real Whisper tiny.en encoder, on CPU, with espeak-ng speech.

Reproduces the core of Pluth et al. (2026) at laptop scale: frame-level SAE on one encoder
residual site, then FVU / L0 / dead fraction on held-out speech, the spliced WER and
decoder cross-entropy, and labels for a handful of features from their top activations.

    python scripts/sae_train.py                       # defaults: layer 2 resid_post, TopK k=32, 8x
    python scripts/sae_train.py --arch relu --l1 5
    python scripts/sae_train.py --resume              # continue from results/sae_tiny/checkpoint

Writes results/sae_tiny/{sae/, checkpoint/, metrics.json, browser/index.html, training.png}.
Training speech: Harvard and template sentences in several espeak voices, packed several
to a 30 s window (so every encoder position is trained on, and each encoder pass yields
~1000 frames); evaluation: other sentences, one per clip, as a transcription would see them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import _common

from hooked_asr.sae import ModelFrameSource, SAEConfig, SAETrainer, SparseAutoencoder, TrainConfig, save_sae
from hooked_asr.sae.corpus import english_sentences
from hooked_asr.sae.evaluate import reconstruction_metrics, splice_metrics
from hooked_asr.sae.features import collect_feature_stats, feature_reports, write_feature_browser

VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m3"]


def packed_clips(sentences: list[str], voices: list[str], per_clip: int) -> _common.PackedSpeech:
    """``per_clip`` sentences per 28 s window; window ``i``'s ``j``-th sentence in ``voices[(i + j) % n]``."""
    groups = [sentences[k : k + per_clip] for k in range(0, len(sentences), per_clip)]
    return _common.PackedSpeech(
        [[(s, voices[(i + j) % len(voices)]) for j, s in enumerate(g)] for i, g in enumerate(groups)], max_seconds=28.0
    )


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--site", default="resid_post")
    ap.add_argument("--arch", default="topk", choices=["topk", "relu"])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--l1", type=float, default=5.0)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--train-sentences", type=int, default=600)
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the training speech")
    ap.add_argument("--eval-sentences", type=int, default=24)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-label", type=int, default=12, help="features to label and put in the browser")
    ap.add_argument("--out", default="results/sae_tiny")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument(
        "--store",
        action="store_true",
        help="extract the training frames once into an activation store (out/acts, resumable) and "
        "train from it, instead of re-running the encoder on every pass",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    import hooked_asr
    from hooked_asr.datasets.espeak import synthesize

    t0 = time.process_time()
    model = hooked_asr.load_model(args.model)
    hook = hooked_asr.act_name(args.site, args.layer, "encoder")
    timings["load model"] = time.process_time() - t0

    # Held-out sentences (templates with another seed, no Harvard) for evaluation and features.
    all_train = english_sentences(args.train_sentences, seed=0)
    eval_sents = [s for s in english_sentences(args.eval_sentences * 3, seed=1, harvard=False) if s not in all_train]
    eval_sents = eval_sents[: args.eval_sentences]
    train_clips = packed_clips(all_train, VOICES, per_clip=8)

    t0 = time.process_time()
    if args.store:
        from hooked_asr.activations import extract_activations

        store = extract_activations(
            model,
            train_clips,
            [hook],
            out / "acts",
            pooling="none",
            shard_size=4,
            batch_size=2,
            dataset_id=f"sae_train:{args.train_sentences}",
        )
        source = store.frame_source(hook)  # one chunk per shard; the trainer starts a new pass when it ends
        n_frames_est = store.n_rows(hook)  # exact
    else:
        source = ModelFrameSource(model, train_clips, hook, batch_size=2, pad_frames=8)
        n_frames_est = source.clip_frames(train_clips[0]) * len(train_clips)  # estimated from one clip
    total_frames = int(args.epochs * n_frames_est)
    timings["extract to store" if args.store else "synthesize one clip (estimate)"] = time.process_time() - t0
    d_in = model.cfg.encoder.d_model
    ckpt = out / "checkpoint"
    tcfg = dict(
        total_frames=total_frames,
        batch_size=args.batch,
        lr=args.lr,
        buffer_frames=16384,
        checkpoint_dir=str(ckpt),
        checkpoint_every=100,
        log_every=10,
    )
    if args.resume:
        trainer = SAETrainer.resume(ckpt, source)
        print(f"resumed at step {trainer.state.step} ({trainer.state.frames_seen} frames)")
    else:
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=args.expansion * d_in,
            architecture=args.arch,
            k=args.k,
            l1_coefficient=args.l1,
            hook_name=hook,
            model_name=args.model,
            dead_after_frames=min(200_000, total_frames // 4),
        )
        trainer = SAETrainer(SparseAutoencoder(cfg), TrainConfig(**tcfg))
    print(
        f"training {args.arch} SAE d_sae={trainer.sae.d_sae} on {hook}: {total_frames} frames "
        f"({len(train_clips)} packed clips x {args.epochs} passes)"
    )
    t0, w0 = time.process_time(), time.time()
    trainer.train(source)
    timings["train (encoder + SAE), CPU s"] = time.process_time() - t0
    timings["train wall s"] = time.time() - w0
    sae = trainer.sae.eval()
    save_sae(sae, out / "sae")

    t0 = time.process_time()
    eval_audio = [synthesize(s, voice="en-us") for s in eval_sents]
    recon = reconstruction_metrics(sae, ModelFrameSource(model, eval_audio, hook, batch_size=4, pad_frames=8))
    timings["eval reconstruction"] = time.process_time() - t0
    t0 = time.process_time()
    splice_speech = splice_metrics(model, sae, eval_audio, references=eval_sents, frames="speech")
    splice_all = splice_metrics(model, sae, eval_audio[:8], references=eval_sents[:8], frames="all", progress=False)
    timings["eval splice"] = time.process_time() - t0

    # Features: statistics over train sentences spoken one per clip plus the eval clips.
    t0 = time.process_time()
    feat_sents = all_train[:60] + eval_sents
    feat_audio = [synthesize(s, voice=VOICES[i % 2]) for i, s in enumerate(feat_sents)]
    stats = collect_feature_stats(model, sae, feat_audio, top_k=8)
    freq = stats.frequency
    alive = torch.nonzero((freq > 2e-3) & (freq < 0.1)).flatten()
    # A spread of features: the strongest (by max activation) among those neither rare nor dense.
    chosen = alive[stats.max_act[alive].argsort(descending=True)][: args.n_label].tolist()
    aligned: dict = {}  # each clip is transcribed and word-aligned once, for the labels and the browser
    reports = feature_reports(model, stats, feat_audio, chosen, aligned=aligned)
    write_feature_browser(
        model,
        sae,
        stats,
        reports,
        feat_audio,
        out / "browser",
        title=f"{args.model} {hook} {args.arch} SAE",
        aligned=aligned,
    )
    timings["features + browser"] = time.process_time() - t0

    categories = categorise(reports)
    _plot_training(trainer.state.history, out / "training.png")
    result = {
        "model": args.model,
        "hook": hook,
        "sae": sae.cfg.to_dict(),
        "train_frames": trainer.state.frames_seen,
        "reconstruction": recon.summary(),
        "splice_speech_frames": splice_speech.summary(),
        "splice_all_frames": splice_all.summary(),
        "cpu_seconds": timings,
        "features": [
            {
                "feature": r.feature,
                "label": r.label,
                "frequency": r.frequency,
                "top_words": [e.word for e in r.examples],
            }
            for r in reports
        ],
        "transcripts": splice_speech.transcripts[:6],
        "feature_categories": categories,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))

    print("\n== reconstruction on held-out speech ==")
    print(
        f"FVU {recon.fvu:.3f}   L0 {recon.l0:.1f}   dead {100 * recon.dead_fraction:.1f}%   "
        f"dense {100 * recon.dense_fraction:.1f}%   ({recon.n_frames} frames)"
    )
    print("== splice (speech frames) ==")
    s = splice_speech
    print(
        f"WER clean {s.wer_clean:.3f} -> spliced {s.wer_spliced:.3f}   CE clean {s.ce_clean:.3f} spliced "
        f"{s.ce_spliced:.3f} mean-ablated {s.ce_mean_ablated:.3f}  CE recovered {s.ce_recovered:.3f}  "
        f"KL {s.kl_clean_spliced:.3f}"
    )
    a = splice_all
    print(
        f"(all 1500 frames, 8 clips: WER clean {a.wer_clean:.3f} -> spliced {a.wer_spliced:.3f}, "
        f"CE recovered {a.ce_recovered:.3f})"
    )
    for row in s.transcripts[:3]:
        print(f"  ref: {row['reference']}\n  cln: {row['clean']}\n  spl: {row['spliced']}")
    print("== features ==")
    for r in reports:
        print(
            f"  {r.feature:5d}  freq {100 * r.frequency:5.2f}%  {r.label:45s} top: "
            f"{', '.join(e.word or '-' for e in r.examples[:6])}"
        )

    cat_rows = [
        {
            "category": c,
            "paper (Pluth et al. 2026)": PAPER_KINDS.get(c, "-"),
            "ours: features": len(fs),
            "share": len(fs) / max(len(reports), 1),
            "examples": " ".join(str(f) for f in fs[:5]) or "-",
        }
        for c, fs in categories.items()
    ]
    _common.print_table(
        cat_rows,
        f"== feature categories over the {len(reports)} labelled features (the paper gives kinds, no counts) ==",
    )
    print("== CPU seconds ==")
    for k, v in timings.items():
        print(f"  {k:34s} {v:7.1f}")
    print(f"\nwrote {out}/metrics.json, {out}/browser/index.html, {out}/sae/")


PAPER_KINDS = {
    "phonetic": "found",
    "semantic": "found",
    "morphological": "found",
    "positional": "found",
    "lexical": "found",
    "non-linguistic": "found ('non-linguistic' features)",
    "mixed": "-",
}


def categorise(reports) -> dict[str, list[int]]:
    """The SAE paper's kinds counted over the labelled features (``feature_category``)."""
    from hooked_asr.datasets.espeak import phonemize
    from hooked_asr.sae.evaluate import FEATURE_CATEGORIES, feature_category

    out: dict[str, list[int]] = {c: [] for c in FEATURE_CATEGORIES}
    for r in reports:
        ws = [e.word for e in r.examples]
        try:
            ph = [phonemize(w).strip() if w else "" for w in ws]
        except Exception as err:  # noqa: BLE001 - the phonemizer is optional; say so
            print(f"phonemes skipped ({err}); phonetic features cannot be recognised")
            ph = None
        out[feature_category(r.label, ws, ph)].append(r.feature)
    return out


def _plot_training(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.6))
    for ax, key in zip(axes, ("fvu", "l0", "dead_fraction")):
        ax.plot(steps, [h[key] for h in history])
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
