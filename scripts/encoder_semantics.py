"""Section 4.3 of "Beyond Transcription": semantic categories in the encoder.

Each item is one fixed carrier sentence ("I really like the {word}.") with a word from one of
two categories (``hooked_asr.datasets.labelled.semantic_dataset``: one espeak-ng voice and rate,
so the word is the only thing that changes). For every category pair, the residual stream after
every encoder block (mean over the clip's audio frames) is probed with a logistic regression on
a stratified 80/20 split. A probe above chance means the category - a semantic property, not an
acoustic one shared by the words - is linearly readable from the acoustic encoder. Different
words within a class share no sound pattern, so the probe must generalise across words: the
held-out words are words it has never heard.

Paper reference (Whisper large-v3; qualitative, exact numbers not reproduced here): semantic
category pairs (e.g. fruits vs clothing) are linearly separable from the encoder's residual
stream, increasingly so in the deeper encoder layers - the paper's "semantic biases encoded deep
within acoustic representations". With 16 words per category and a 4-layer tiny.en expect noisy,
weaker numbers.

Writes ``<out>/<a>_vs_<b>/probe_sweep.{csv,json,png}``, ``<out>/summary.{csv,json}`` and
``<out>/encoder_semantics.png`` (layer x pair heatmap of held-out accuracy).

    python scripts/encoder_semantics.py --model whisper-tiny.en --n 16 --out results/encoder_semantics
    python scripts/encoder_semantics.py --n 4 --out /tmp/x       # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_probe_options

PAPER_REFERENCE = (
    "Paper (Whisper large-v3, Sec 4.3; qualitative, see docs/paper_reference.md): specific encoder layers "
    "predict semantic categories (e.g. fruits vs clothing) 'with impressive accuracy'; the number and layer "
    "were not retrieved."
)
DEFAULT_PAIRS = "fruits:clothing,animals:vehicles,countries:weather"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny.en", help="registry name, local dir or hub id")
    ap.add_argument("--n", type=int, default=16, help="items per category (at most 16 per carrier sentence)")
    ap.add_argument("--out", default="results/encoder_semantics")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated a:b category pairs")
    ap.add_argument("--carriers", nargs="*", default=None,
                    help="carrier sentences with {word} (more carriers allow --n > 16)")
    ap.add_argument("--stack", choices=["encoder", "decoder", "all"], default="encoder")
    add_probe_options(ap, l2=1e-2, test_size=0.25, smoke_help="tiny settings (n=4, one pair) for a quick check")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    import hooked_asr
    from hooked_asr.activations import extract_activations
    from hooked_asr.datasets.labelled import semantic_dataset
    from hooked_asr.plotting import plot_heatmap
    from hooked_asr.probing import model_hooks, probe_layers

    args = parse_args(argv)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p.strip()]
    if args.smoke:
        args.n, pairs = min(args.n, 4), pairs[:1]
    for p in pairs:
        if len(p) != 2:
            raise SystemExit(f"pairs are written a:b, got {':'.join(p)!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = hooked_asr.load_model(args.model).to(args.device).eval()
    name = getattr(model.cfg, "name", args.model)
    hooks = model_hooks(model, args.stack)
    print(f"{name}: semantic-category probes on {len(hooks)} {args.stack} hooks, pairs {pairs}, {args.n} per class")
    print(PAPER_REFERENCE)

    carrier = args.carriers if args.carriers else "I really like the {word}."
    summary, table, sweeps = [], [], {}
    for a, b in pairs:
        tag = f"{a}_vs_{b}"
        ds = semantic_dataset((a, b), n_per_class=args.n, seed=args.seed, carrier=carrier, progress=True)
        store = extract_activations(model, ds, hooks, out / "acts" / tag, batch_size=args.batch_size,
                                    dataset_id=f"{ds.dataset_id}|{name}", progress=True)
        sweep = probe_layers(store, hooks=hooks, test_size=args.test_size, seed=args.seed, l2=args.l2,
                             title=f"{a} vs {b} (carrier sentence) - {name}")
        sweep.save(out / tag)
        sweeps[tag] = sweep
        print()
        print(sweep.summary())
        test_words = sorted({ds.records[int(i)]["word"] for i in sweep.results[hooks[0]].test_idx})
        print(f"held-out words: {', '.join(test_words)}")
        for r in sweep.rows:
            summary.append({"pair": tag, "hook": r["hook"], "layer": r["layer"], "n_train": r["n_train"],
                            "n_test": r["n_test"], "train_acc": r["train_acc"], "test_acc": r["test_acc"],
                            "f1": r["f1"], "chance": r["chance"], "best": r["key"] == sweep.best_layer})
        table.append([r["test_acc"] for r in sweep.rows])

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    values = np.array(table, dtype=float).T  # [layer, pair]
    rows = [f"{h.split('.')[0][:3]}{h.split('.')[2]}" for h in hooks]
    plot_heatmap(values, rows, list(sweeps), cell_text=[[f"{v:.2f}" for v in row] for row in values],
                 title=f"held-out accuracy of category probes - {name}", cbar_label="test accuracy",
                 path=out / "encoder_semantics.png")
    (out / "summary.json").write_text(json.dumps({
        "model": name, "n_per_class": args.n, "pairs": [list(p) for p in pairs], "hooks": hooks,
        "test_acc": {t: [None if np.isnan(v) else float(v) for v in values[:, j]] for j, t in enumerate(sweeps)},
        "best_layer": {t: s.best_layer for t, s in sweeps.items()}, "paper_reference": PAPER_REFERENCE,
        "seconds": round(time.time() - t0, 1)}, indent=1))
    print(f"\nmean held-out accuracy per layer over pairs: "
          f"{', '.join(f'{r} {v:.3f}' for r, v in zip(rows, np.nanmean(values, 1)))}")
    print(f"wrote {out}/ ({time.time() - t0:.1f} s)")
    return {"sweeps": sweeps}


if __name__ == "__main__":
    main()
