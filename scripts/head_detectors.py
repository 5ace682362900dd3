"""Head detectors on real Whisper: do the alignment-detector's top heads match OpenAI's published alignment heads?

Speech is built word by word with espeak-ng (hooked_asr.circuits.word_by_word), so every word's
time is known exactly. For each model, every decoder cross-attention head is scored by the
attention mass it puts, from the row writing each text token, on the frames of that token's word
(``detect_heads(kind="alignment")``); the top k heads (k = the number of published heads in
``model.cfg.alignment_heads``, shipped in the checkpoint's config) are compared with the published
ones: overlap, chance (k^2 / n_heads, the expected overlap of a random top-k) and the hypergeometric
p-value of an overlap at least that large. Previous-token, duplicate-token, padding and first-frame
scores are written beside it.

    python scripts/head_detectors.py --models whisper-tiny.en whisper-base --n 6 --out results/head_detectors
"""

from __future__ import annotations

import json
from pathlib import Path

import _common

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "my name is john and i live in a big house near the river",
    "please call stella and ask her to bring these things with her",
    "we should meet again next week to finish the report",
    "the weather today is cold and windy with some rain",
    "turn left at the second light and park behind the bank",
    "seven green apples fell from the old tree in the garden",
]
KINDS = ["alignment", "previous_token", "duplicate_token", "padding", "first_frame"]


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    ap.add_argument("--n", type=int, default=6, help="number of sentences (each spoken word by word)")
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--tolerance", type=float, default=0.0, help="seconds added on each side of a word's window")
    ap.add_argument("--out", default="results/head_detectors")
    args = ap.parse_args()

    import torch
    from scipy.stats import hypergeom

    import hooked_asr
    from hooked_asr.circuits import detect_heads, save_head_scores, top_heads, word_by_word

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for s in SENTENCES[: args.n]:
        audio, words = word_by_word(s.split(), voice=args.voice)
        items.append({"audio": audio, "words": words})
    rows = []
    for name in args.models:
        model = hooked_asr.load_model(name)
        scores = detect_heads(model, items, KINDS, tolerance_s=args.tolerance)
        published = [tuple(h) for h in model.cfg.alignment_heads]
        if not published:
            raise SystemExit(f"{name}: the checkpoint's config lists no alignment heads to compare with")
        L, H = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
        k, n = len(published), L * H
        top = top_heads(scores["alignment"], k)
        overlap = len(set(top) & set(published))
        ranks = scores["alignment"].flatten().argsort(descending=True).argsort()
        pub_ranks = sorted(int(ranks[l * H + h]) + 1 for l, h in published)
        row = {
            "model": name,
            "n_items": len(items),
            "n_heads": n,
            "k": k,
            "overlap": overlap,
            "chance": k * k / n,
            "p_value": float(hypergeom.sf(overlap - 1, n, k, k)),
            "top_heads": [list(h) for h in top],
            "published": [list(h) for h in published],
            "published_ranks": pub_ranks,
            "mean_score_published": float(torch.stack([scores["alignment"][l, h] for l, h in published]).mean()),
            "mean_score_others": float(scores["alignment"].sum() - sum(scores["alignment"][l, h] for l, h in published))
            / (n - k),
            "best_previous_token": list(top_heads(scores["previous_token"], 1)[0]),
            "max_previous_token": float(scores["previous_token"].max()),
            "max_cross_padding": float(scores["padding"]["decoder.cross_attn"].max()),
        }
        rows.append(row)
        stem = out / name
        for kind in KINDS:
            save_head_scores(
                scores[kind], out / f"{name}_{kind}", kind, marked=published if kind == "alignment" else ()
            )
        print(
            f"{name}: alignment top-{k} {top}\n  published {published}\n  overlap {overlap}/{k} "
            f"(chance {row['chance']:.2f}, p = {row['p_value']:.2g}); published heads rank {pub_ranks} of {n}; "
            f"mean score published {row['mean_score_published']:.3f} vs others {row['mean_score_others']:.3f}"
        )
        del model, stem
    (out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
