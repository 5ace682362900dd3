"""Section 4.3 of "Beyond Transcription": acoustic vs contextual words, and where context gets in.

Each sentence is spoken with a word that the context makes unlikely ("for dinner we ate
white *lice*": acoustic word "lice", contextual word "rice"). The audio is built from three
espeak-ng segments (context before, the word, context after), so the word's encoder
frames are known exactly (one frame = 20 ms).

Conditions (greedy transcripts):

* clean: the sentence as spoken;
* context masked: the context segments replaced by RMS-matched white noise, the word intact;
* restored via encoder (layer l): the clean run with the encoder residual
  ``encoder.blocks.{l}.hook_resid_post`` (and ``encoder.hook_out``) patched at the word's
  frames only, from the context-masked run: the decoder then reads a word representation
  the encoder built without the context, with the context frames untouched;
* restored via decoder (layer l): the clean run with decoder cross-attention output
  ``decoder.blocks.{l}.hook_cross_attn_out`` patched from the context-masked run
  (teacher-forced on the clean transcript's tokens; later positions unpatched): the
  decoder's reading of the audio without context, its own text context intact.

"Restored accuracy" is the share of items whose clean transcript misses the acoustic word
that, under the intervention, contain the acoustic word and not the contextual one.

Table 2 of the paper ([BT] §4.3: 700 TTS sentences; Whisper large-v3 errs on 153, of which
white-noise component patching restores 136 (88.9 %), 130 via an encoder component, 126 via a
decoder component) is reproduced with the paper's own intervention: every encoder and decoder
sub-component (self-attention, cross-attention, MLP of every block) interpolated towards its
activation on RMS-matched white noise, ``a~ = (1 - alpha) a + alpha a_noise`` (``--alpha``; the
paper's alpha is not in the text), one component at a time; an error case counts as restored
(via the encoder / via the decoder) when some component (of that stack) restores it.

    python scripts/acoustic_contextual.py --model whisper-tiny.en --out results/acoustic_contextual
"""

from __future__ import annotations

import json
from pathlib import Path

import _common
import numpy as np

# (context before, acoustic word, contextual word, context after)
SENTENCES = [
    ("for dinner we ate white", "lice", "rice", "with chopsticks"),
    ("the baby drank a bottle of warm", "silk", "milk", "before bed"),
    ("every morning i drink a hot cup of", "coffin", "coffee", "with sugar"),
    ("the cat chased the little grey", "house", "mouse", "across the kitchen"),
    ("please pass the salt and the", "paper", "pepper", "for my soup"),
    ("the farmer went to milk the", "bow", "cow", "in the barn"),
    ("the bird built a", "vest", "nest", "high in the tree"),
    ("on our holiday we swam in the", "notion", "ocean", "every day"),
    ("before eating you should wash your", "bands", "hands", "with soap"),
    ("the sun always rises in the", "yeast", "east", "and sets in the west"),
    ("i borrowed a", "hook", "book", "from the library"),
    ("he put on his socks and his", "chews", "shoes", "and went outside"),
    ("the king wore a golden", "clown", "crown", "on his head"),
    ("we lit the candles on the birthday", "rake", "cake", "and sang"),
    ("he unlocked the front door with his", "tea", "key", "and walked in"),
    ("the dog wagged its", "sail", "tail", "when we came home"),
    ("she wrote the letter with a", "pin", "pen", "and blue ink"),
    ("it was cold so he wore a warm", "boat", "coat", "and a scarf"),
    ("the fisherman caught a big", "dish", "fish", "in the river"),
    ("after the long run he was very", "firsty", "thirsty", "and drank water"),
]
FRAME_SAMPLES = 320  # one encoder frame: 20 ms at 16 kHz
TABLE2_ROWS = ["Error Cases", "Restored Acc.", "Via Encoder", "Via Decoder"]
PAPER_WHISPER = ["153/700 (21.8%)", "136/153 (88.9%)", "130/153 (85.0%)", "126/153 (82.4%)"]  # [BT] Table 2
PAPER_QWEN = ["251/700 (35.8%)", "176/251 (70.1%)", "171/251 (68.1%)", "147/251 (58.6%)"]


def _trim(a: np.ndarray, thr: float = 1e-3) -> np.ndarray:
    idx = np.flatnonzero(np.abs(a) > thr)
    return a[idx[0] : idx[-1] + 1] if idx.size else a


def build_item(before: str, word: str, after: str, synthesize, voice: str, seed: int, gap_s: float = 0.06):
    """``(audio, masked_audio, word_frames)``: speech, the same with context -> noise, the word's frames."""
    from hooked_asr.patching import white_noise_like

    gap = np.zeros(int(gap_s * 16000), dtype=np.float32)
    segs = [_trim(synthesize(s, voice=voice)) if s else np.zeros(0, np.float32) for s in (before, word, after)]
    lead = np.zeros(int(0.2 * 16000), dtype=np.float32)
    parts = [lead, segs[0], gap, segs[1], gap, segs[2], lead]
    audio = np.concatenate(parts).astype(np.float32)
    w0 = len(lead) + len(segs[0]) + len(gap)
    w1 = w0 + len(segs[1])
    masked = audio.copy()
    ctx = np.ones(audio.size, dtype=bool)
    ctx[w0 - len(gap) : w1 + len(gap)] = False  # the word and its pauses stay
    ctx[: len(lead)] = ctx[audio.size - len(lead) :] = False
    noise = white_noise_like(audio[ctx], seed=seed)  # RMS of the context it replaces
    masked[ctx] = noise
    frames = range(w0 // FRAME_SAMPLES, -(-w1 // FRAME_SAMPLES))
    return audio, masked, frames


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--model", action="append", default=None, help="model(s) (default: whisper-tiny.en; repeatable)")
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--n", type=int, default=len(SENTENCES), help="number of sentences")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--alpha", type=float, default=0.5, help="white-noise interpolation weight (Table 2)")
    ap.add_argument("--out", default="results/acoustic_contextual")
    args = ap.parse_args()

    import pandas as pd
    from tqdm.auto import tqdm

    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.loading.registry import load_model
    from hooked_asr.patching import SweepItem, components, contains_word, sweep

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, per_item, table2 = [], [], []
    for model_name in args.model or ["whisper-tiny.en"]:
        model = load_model(model_name)
        L_enc, L_dec = model.n_layers["encoder"], model.n_layers["decoder"]
        enc_comps = [f"encoder.blocks.{l}.hook_resid_post" for l in range(L_enc)] + ["encoder.hook_out"]
        dec_comps = [f"decoder.blocks.{l}.cross_attn" for l in range(L_dec)]
        subcomps = [c.name for c in components(model, kinds=["attn", "cross_attn", "mlp"], heads=False)]
        for i, (before, word, ctx_word, after) in enumerate(tqdm(SENTENCES[: args.n], desc=model_name)):
            audio, masked, frames = build_item(before, word, after, synthesize, args.voice, seed=i)
            clean = model.transcribe(audio, max_new_tokens=args.max_new_tokens, language="en")
            masked_t = model.transcribe(masked, max_new_tokens=args.max_new_tokens, language="en")
            extra = {"acoustic_word": word, "contextual_word": ctx_word}
            item = SweepItem(f"{i}-{word}", audio, reference=masked, text=f"{before} {word} {after}", extra=extra)
            kw = dict(
                metrics=["word_restored"],
                max_new_tokens=args.max_new_tokens,
                progress=False,
                missing="keep",
                teacher_forced_kwargs={"language": "en"},
            )
            enc = sweep(model, [item], enc_comps, "patch", positions=list(frames), **kw).table
            dec = sweep(model, [item], dec_comps, "patch", **kw).table
            noise_item = SweepItem(item.id, audio, text=item.text, extra=extra)
            wn = sweep(
                model, [noise_item], subcomps, "interpolate", args.alpha, reference="noise", reference_seed=i, **kw
            ).table
            rec = {
                "model": model_name,
                "item": item.id,
                "acoustic": word,
                "contextual": ctx_word,
                "clean": clean.text,
                "masked": masked_t.text,
                "clean_acoustic": contains_word(clean.text, word),
                "clean_contextual": contains_word(clean.text, ctx_word),
                "masked_acoustic": contains_word(masked_t.text, word),
            }
            for t in (enc, dec):
                for r in t.itertuples():
                    rec[f"restored:{r.component}"] = bool(r.value)
            for r in wn.itertuples():
                rec[f"noise:{r.component}"] = bool(r.value)
            per_item.append(rec)
        df = pd.DataFrame([r for r in per_item if r["model"] == model_name])
        wrong = df[~df["clean_acoustic"]]
        row = {
            "model": model_name,
            "n": len(df),
            "acoustic word (clean)": df["clean_acoustic"].mean(),
            "contextual word (clean)": df["clean_contextual"].mean(),
            "acoustic word (context masked)": df["masked_acoustic"].mean(),
            "n errors": len(wrong),
        }
        for c in enc_comps + dec_comps:
            row[f"restored via {c}"] = wrong[f"restored:{c}"].mean() if len(wrong) else float("nan")
        row["restored via encoder (best layer)"] = max(
            [row[f"restored via {c}"] for c in enc_comps if row[f"restored via {c}"] == row[f"restored via {c}"]],
            default=float("nan"),
        )
        row["restored via decoder (best layer)"] = max(
            [row[f"restored via {c}"] for c in dec_comps if row[f"restored via {c}"] == row[f"restored via {c}"]],
            default=float("nan"),
        )
        err = wrong
        via_enc = err[[f"noise:{c}" for c in subcomps if c.startswith("encoder")]].any(axis=1) if len(err) else err
        via_dec = err[[f"noise:{c}" for c in subcomps if c.startswith("decoder")]].any(axis=1) if len(err) else err
        n, ne = len(df), len(err)

        def frac(k: int, m: int) -> str:
            return f"{k}/{m} ({100 * k / m:.1f}%)" if m else f"{k}/{m}"

        ours = [
            frac(ne, n),
            frac(int((via_enc | via_dec).sum()) if ne else 0, ne),
            frac(int(via_enc.sum()) if ne else 0, ne),
            frac(int(via_dec.sum()) if ne else 0, ne),
        ]
        for metric, pw, pq, o in zip(TABLE2_ROWS, PAPER_WHISPER, PAPER_QWEN, ours):
            table2.append(
                {"Metric": metric, "paper Whisper (large-v3)": pw, "paper Qwen2-Audio": pq, f"ours ({model_name})": o}
            )
        row["Table 2"] = dict(zip(TABLE2_ROWS, ours))
        rows.append(row)
    table = pd.DataFrame(rows)
    pd.DataFrame(per_item).to_csv(out / "items.csv", index=False)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.json").write_text(json.dumps(rows, indent=1, default=float))
    _plot(table, out / "restored.png")
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.drop(columns=["Table 2"]).T.to_string(float_format=lambda v: f"{v:.2f}"))
    print()
    merged: dict[str, dict] = {}
    for r in table2:
        merged.setdefault(r["Metric"], {}).update(r)

    _common.print_table(
        list(merged.values()),
        f"Table 2: acoustic-contextual patching with white noise (alpha {args.alpha}; "
        f"{args.n} sentences, the paper: 700)",
    )
    (out / "table2.json").write_text(json.dumps(list(merged.values()), indent=1))
    print(f"wrote {out}/table.csv, table2.json, items.csv, table.json, restored.png")


def _plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for _, row in table.iterrows():
        cols = [c for c in table.columns if c.startswith("restored via ") and "best" not in c]
        labels = [
            c.replace("restored via ", "").replace("hook_resid_post", "resid").replace(".blocks.", " L") for c in cols
        ]
        ax.plot(range(len(cols)), [row[c] for c in cols], "o-", label=row["model"])
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("restored accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.set_title("acoustic word restored by patching from the context-masked run")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
