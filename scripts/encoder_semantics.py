"""Section 4.3 of "Beyond Transcription": semantic categories in the encoder.

Each item is a carrier sentence ("I really like the {word}.", and ``--carriers`` more) with a
word from one of two categories (``hooked_asr.datasets.labelled.semantic_dataset``: one espeak-ng
voice and rate, so the word is the only thing that changes within a carrier). For every category
pair, the residual stream after every encoder block (mean over the clip's audio frames) is probed
with a logistic regression. The split is by **word**: ``--test-size`` of each category's words are
held out and every clip of those words is in the test set, so a probe is scored only on words it
never heard in training; above chance it must read the category, not memorise words.

The paper ([BT] §4.3, Fig. 1): synthetic audio of "carefully selected terms from distinct semantic
groups, e.g., fruits and clothing"; pairwise linear probes on encoder activations; separation
"emerges as early as the middle encoder layers (18-21)"; at the last encoder layer average accuracy
85.6 %, several pairs 96.7 % (countries vs weather or clothing). Word lists and whether test words
were held out: not in the text (appendix).

Writes ``<out>/<a>_vs_<b>/probe_sweep.{csv,json,png}``, ``<out>/summary.{csv,json}`` and
``<out>/encoder_semantics.png`` (layer x pair heatmap of held-out accuracy).

    python scripts/encoder_semantics.py --model whisper-tiny.en --n 16 --out results/encoder_semantics
    python scripts/encoder_semantics.py --n 4 --out /tmp/x       # smoke run
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import _common
from _common import add_probe_options

PAPER_REFERENCE = (
    "Paper ([BT] §4.3, Fig. 1, Whisper large-v3): category pairs separable from the middle encoder layers (18-21 of "
    "32) on; last encoder layer: mean accuracy 85.6 %, several pairs 96.7 % (e.g. countries vs weather / clothing)."
)
PAPER_LAST_LAYER = {"countries_vs_weather": 0.967, "countries_vs_clothing": 0.967}  # [BT] §4.3
PAPER_MEAN_LAST = 0.856
DEFAULT_PAIRS = "fruits:clothing,animals:vehicles,countries:weather,countries:clothing"
DEFAULT_CARRIERS = ["I really like the {word}.", "Yesterday I saw a {word}.", "Tell me about the {word} again."]


def word_split(words: list[str], labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` with each category's words partitioned: every clip of a held-out
    word is in the test set (at least one word per category on each side)."""
    rng = np.random.default_rng(seed)
    test_words = set()
    for c in np.unique(labels):
        ws = sorted({w for w, l in zip(words, labels) if l == c})
        if len(ws) < 2:
            raise SystemExit(f"category {c} has {len(ws)} distinct word(s); a held-out-word split needs 2 or more")
        k = min(max(1, round(test_size * len(ws))), len(ws) - 1)
        test_words |= set(rng.permutation(ws)[:k].tolist())
    te = np.array([i for i, w in enumerate(words) if w in test_words])
    tr = np.array([i for i, w in enumerate(words) if w not in test_words])
    return tr, te


def parse_args(argv=None):
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en", help="registry name, local dir or hub id")
    ap.add_argument("--n", type=int, default=48, help="clips per category (at most 16 words x the carriers)")
    ap.add_argument("--out", default="results/encoder_semantics")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated a:b category pairs")
    ap.add_argument(
        "--carriers", nargs="*", default=None, help="carrier sentences with {word} (more carriers allow --n > 16)"
    )
    ap.add_argument("--stack", choices=["encoder", "decoder", "all"], default="encoder")
    add_probe_options(ap, l2=1e-2, test_size=0.25, smoke_help="tiny settings (n=4, one pair) for a quick check")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
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
    model, out, t0 = _common.setup(args)
    name = getattr(model.cfg, "name", args.model)
    hooks = model_hooks(model, args.stack)
    print(f"{name}: semantic-category probes on {len(hooks)} {args.stack} hooks, pairs {pairs}, {args.n} per class")
    print(PAPER_REFERENCE)

    carrier = args.carriers if args.carriers else DEFAULT_CARRIERS
    summary, table, sweeps = [], [], {}
    for a, b in pairs:
        tag = f"{a}_vs_{b}"
        ds = semantic_dataset((a, b), n_per_class=args.n, seed=args.seed, carrier=carrier, progress=True)
        store = extract_activations(
            model,
            ds,
            hooks,
            out / "acts" / tag,
            batch_size=args.batch_size,
            dataset_id=f"{ds.dataset_id}|{name}",
            progress=True,
        )
        words = [r["word"] for r in ds.records]
        split = word_split(words, ds.labels(), args.test_size, args.seed)
        sweep = probe_layers(store, hooks=hooks, split=split, l2=args.l2, title=f"{a} vs {b} (held-out words) - {name}")
        sweep.save(out / tag)
        sweeps[tag] = sweep
        print()
        print(sweep.summary())
        test_words = sorted({words[int(i)] for i in split[1]})
        train_words = {words[int(i)] for i in split[0]}
        assert not train_words & set(test_words), "a held-out word leaked into training"
        print(f"held-out words (never in training): {', '.join(test_words)}")
        for r in sweep.rows:
            summary.append(
                {
                    "pair": tag,
                    "hook": r["hook"],
                    "layer": r["layer"],
                    "n_train": r["n_train"],
                    "n_test": r["n_test"],
                    "train_acc": r["train_acc"],
                    "test_acc": r["test_acc"],
                    "f1": r["f1"],
                    "chance": r["chance"],
                    "best": r["key"] == sweep.best_layer,
                }
            )
        table.append([r["test_acc"] for r in sweep.rows])

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    values = np.array(table, dtype=float).T  # [layer, pair]
    rows = [f"{h.split('.')[0][:3]}{h.split('.')[2]}" for h in hooks]
    plot_heatmap(
        values,
        rows,
        list(sweeps),
        cell_text=[[f"{v:.2f}" for v in row] for row in values],
        title=f"held-out accuracy of category probes - {name}",
        cbar_label="test accuracy",
        path=out / "encoder_semantics.png",
    )
    (out / "summary.json").write_text(
        json.dumps(
            {
                "model": name,
                "n_per_class": args.n,
                "pairs": [list(p) for p in pairs],
                "hooks": hooks,
                "test_acc": {
                    t: [None if np.isnan(v) else float(v) for v in values[:, j]] for j, t in enumerate(sweeps)
                },
                "best_layer": {t: s.best_layer for t, s in sweeps.items()},
                "paper_reference": PAPER_REFERENCE,
                "seconds": round(time.time() - t0, 1),
            },
            indent=1,
        )
    )
    n_layers = len(hooks)
    cols = ["pair"] + rows + ["paper, last layer"]
    tab = [
        dict(zip(cols, [t, *[float(v) for v in values[:, j]], PAPER_LAST_LAYER.get(t)])) for j, t in enumerate(sweeps)
    ]
    tab.append(dict(zip(cols, ["mean", *[float(v) for v in np.nanmean(values, 1)], PAPER_MEAN_LAST])))
    print()
    _common.print_table(
        tab,
        f"§4.3 encoder semantics, {name}: held-out-word accuracy per encoder layer "
        f"({n_layers} layers; the paper: large-v3, 32 layers, rising from layers 18-21)",
        cols,
    )
    print(f"wrote {out}/ ({time.time() - t0:.1f} s)")
    return {"sweeps": sweeps}


if __name__ == "__main__":
    main()
