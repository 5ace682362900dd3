"""Section 4.2 of "Beyond Transcription": predicting a bad transcript from the decoder's residual stream.

1. Inputs on which small Whisper models often go wrong (``hallucination_prone_inputs``: clean,
   noisy, truncated, silence-padded, fast and repeated-word speech, each with its exact reference).
2. The model transcribes them all; ``hallucination_dataset`` keeps zero-WER transcripts
   (label 0, "correct") and the highest-WER ones (label 1, "hallucination", WER >= ``--min-wer``),
   matched pair by pair on reference length so that length cannot give the label away.
3. The residual stream after every decoder block at the end-of-text position
   (``decoder.blocks.{l}.hook_resid_post``, pooling ``final``; teacher-forced on the model's own
   transcript) is extracted, and a logistic probe per layer is trained on a stratified 80/20 split.
4. The best layer's probe becomes a :class:`hooked_asr.monitors.ProbeMonitor`: the held-out clips
   are transcribed again with the monitor live, and its scores are written next to their WER
   (the monitor's accuracy must equal the probe's test accuracy: same rows, same probe).

The paper's protocol ([BT] §4.2, Table 1): each model transcribes LibriSpeech test-clean (and
Common Voice 16.1); 150 zero-WER and the 200 highest-WER transcripts, split 70/30, "text length
distributions ... identical between the low and high WER groups"; a linear probe on the decoder
residual at the end-of-text token per layer; Table 1 gives Test Acc / Train Acc / F1 per layer,
best 0.934 at layer 22 of 32. Defaults here are those sizes (``--n 150 --n-wrong 200
--test-size 0.3``); the length match is reported (mean words per group, KS statistic). Our
inputs are synthetic espeak-ng and tiny.en has 4 decoder layers: compare the shape (by
relative depth, the paper's row at the nearest depth printed beside ours), not the numbers.

Writes ``<out>/dataset.csv`` (every kept clip: kind, reference, transcript, WER, label),
``<out>/probe_sweep.{csv,json,png}``, ``<out>/best_probe.safetensors`` (+ ``.json``),
``<out>/monitor_scores.csv`` and ``<out>/summary.json``.

    python scripts/hallucination_monitoring.py --model whisper-tiny.en --n 100 --out results/hallucination
    python scripts/hallucination_monitoring.py --n 4 --out /tmp/x      # smoke run
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from pathlib import Path

import _common
import numpy as np
from _common import add_probe_options

PAPER_REFERENCE = (
    "Paper ([BT] §4.2, Table 1; Whisper large-v3, LibriSpeech test-clean, 150 zero-WER + 200 highest-WER, 70/30): "
    "best test accuracy 0.934 at decoder layer 22 of 32; Common Voice 88.1 % at layer 22; Qwen2-Audio 70.2 % "
    "(LibriSpeech) / 83.6 % (Common Voice) at layer 22."
)
# [BT] Table 1: layer -> (Test Acc, Train Acc, F1)
PAPER_TABLE1 = {
    5: (0.622, 0.571, 0.726),
    10: (0.900, 0.838, 0.892),
    15: (0.889, 1.000, 0.891),
    20: (0.878, 1.000, 0.882),
    22: (0.934, 1.000, 0.933),
    25: (0.900, 0.995, 0.901),
    31: (0.932, 1.000, 0.932),
}
TABLE1_COLUMNS = [
    "Layer",
    "Test Acc",
    "Train Acc",
    "F1",
    "paper Layer (of 32)",
    "paper Test Acc",
    "paper Train Acc",
    "paper F1",
]


def parse_args(argv=None):
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en", help="registry name, local dir or hub id")
    ap.add_argument("--n", type=int, default=150, help="zero-WER transcripts wanted (the paper: 150)")
    ap.add_argument(
        "--n-wrong",
        type=int,
        default=None,
        help="highest-WER transcripts wanted (default: 200 when "
        "--n is the paper's 150, else 4/3 of --n as in the paper)",
    )
    ap.add_argument(
        "--per-kind",
        type=int,
        default=None,
        help="inputs generated per kind, 6 kinds (default: max(2, ceil(n/2)), which on tiny.en gives "
        "about n pairs; raise it when fewer pairs come out)",
    )
    ap.add_argument("--out", default="results/hallucination")
    ap.add_argument("--stack", choices=["decoder", "encoder", "all"], default="decoder")
    ap.add_argument("--min-wer", type=float, default=0.5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    add_probe_options(ap, l2=1e-3, test_size=0.3)
    return ap.parse_args(argv)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> dict:
    from hooked_asr.activations import extract_activations
    from hooked_asr.datasets.labelled import hallucination_dataset, hallucination_prone_inputs
    from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
    from hooked_asr.probing import model_hooks, probe_layers

    args = parse_args(argv)
    if args.smoke:
        args.n = min(args.n, 4)
    model, out, t0 = _common.setup(args)
    name = getattr(model.cfg, "name", args.model)
    language = "en" if getattr(model.cfg, "is_multilingual", False) else None
    kw = {"language": language} if language else {}
    print(f"{name}: hallucination probes, {args.n} pairs wanted")
    print(PAPER_REFERENCE)

    n_wrong = args.n_wrong or (200 if args.n == 150 else math.ceil(args.n * 4 / 3))
    per_kind = args.per_kind or max(2, math.ceil((args.n + n_wrong) / 4))
    inputs = hallucination_prone_inputs(per_kind, seed=args.seed, progress=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = hallucination_dataset(
                model,
                inputs,
                n_per_class=args.n,
                n_wrong=n_wrong,
                min_wer=args.min_wer,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                **kw,
            )
        except ValueError as err:
            print(f"no pairs: {err}")
            (out / "summary.json").write_text(json.dumps({"model": name, "error": str(err)}, indent=1))
            return {}
    for w in caught:
        print(f"note: {w.message}")
    rows = [
        {k: r.get(k) for k in ("pair", "label", "label_name", "kind", "wer", "ref_words", "text", "transcript")}
        for r in ds.metadata()
    ]
    _write_csv(out / "dataset.csv", rows)
    n_pairs = int((ds.labels() == 0).sum())
    n_high = int((ds.labels() == 1).sum())
    len0 = [r["ref_words"] for r in rows if r["label"] == 0]
    len1 = [r["ref_words"] for r in rows if r["label"] == 1]
    length_match = {
        "zero-WER": n_pairs,
        "highest-WER": n_high,
        "mean words zero-WER": float(np.mean(len0)),
        "mean words highest-WER": float(np.mean(len1)),
        "KS statistic": _common.ks_statistic(len0, len1),
    }
    _common.print_table([length_match], "length match (paper: 'text length distributions are identical'):")
    kinds = {}
    for r in rows:
        kinds.setdefault(r["label_name"], {}).setdefault(r["kind"], 0)
        kinds[r["label_name"]][r["kind"]] += 1
    print(
        f"{n_pairs} zero-WER + {n_high} highest-WER transcripts from {len(inputs)} inputs (the paper: 150 + 200); "
        f"kinds per class: {kinds}"
    )
    if n_pairs < 2:
        msg = "fewer than 2 pairs: a held-out split needs at least 2 per class; raise --per-kind or --n"
        print(msg)
        (out / "summary.json").write_text(json.dumps({"model": name, "pairs": n_pairs, "error": msg}, indent=1))
        return {}

    hooks = model_hooks(model, args.stack)
    store = extract_activations(
        model,
        ds,
        hooks,
        out / "acts",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        language=language or "en",
        dataset_id=f"{ds.dataset_id}|{name}",
        progress=True,
    )
    same = sum(a.get("transcript") == b["transcript"] for a, b in zip(store.items(), rows))
    if same != len(rows):
        print(
            f"note: {len(rows) - same} of {len(rows)} transcripts differ between dataset building and "
            "extraction (different batch composition changes greedy decoding slightly)"
        )
    sweep = probe_layers(
        store,
        hooks=hooks,
        test_size=args.test_size,
        seed=args.seed,
        l2=args.l2,
        title=f"hallucination vs correct (final token) - {name}",
    )
    sweep.save(out)
    print()
    print(sweep.summary())
    n_dec = model.n_layers["decoder"]
    t1 = []
    for r in sweep.rows:
        pl, (pt, ptr, pf) = _common.nearest_paper_row(int(r["layer"]), n_dec, PAPER_TABLE1)
        t1.append(
            dict(zip(TABLE1_COLUMNS, [f"L{r['layer']}", r["test_acc"], r["train_acc"], r["f1"], f"L{pl}", pt, ptr, pf]))
        )
    print()
    _common.print_table(
        t1,
        f"Table 1 (hallucination prediction from the decoder residual stream), {name} beside "
        "[BT] large-v3 at the nearest relative depth",
        TABLE1_COLUMNS,
    )

    best = sweep.best_layer
    res = sweep.results[best]
    res.probe.save(out / "best_probe")
    monitor = ProbeMonitor("hallucination", res.probe, best)
    test_items = [ds[int(i)] for i in res.test_idx]
    scored = transcribe_with_monitors(
        model, [it["audio"] for it in test_items], [monitor], max_new_tokens=args.max_new_tokens, **kw
    )
    score_rows = []
    for i, it, r in zip(res.test_idx, test_items, scored):
        score_rows.append(
            {
                "item": int(i),
                "label": it["label"],
                "kind": it.get("kind"),
                "wer": it["wer"],
                "score": r.extra["monitors"]["hallucination"],
                "predicted": r.extra["monitor_labels"]["hallucination"],
                "transcript": r.text,
            }
        )
    _write_csv(out / "monitor_scores.csv", score_rows)
    mon_acc = float(np.mean([s["predicted"] == s["label"] for s in score_rows]))
    print(
        f"\nmonitor on {best} over {len(score_rows)} held-out clips: accuracy {mon_acc:.3f} "
        f"(probe test accuracy {res.test_acc:.3f})"
    )
    for s in score_rows:
        print(
            f"  label {s['label']}  p(halluc) {s['score']:.3f}  WER {s['wer']:.2f}  {s['kind']:<15} {s['transcript']!r}"
        )
    summary = {
        "model": name,
        "pairs": n_pairs,
        "n_high_wer": n_high,
        "length_match": length_match,
        "table1": t1,
        "inputs": len(inputs),
        "kinds_per_class": kinds,
        "best_layer": best,
        "test_acc": res.test_acc,
        "monitor_acc": mon_acc,
        "rows": sweep.to_json()["rows"],
        "paper_reference": PAPER_REFERENCE,
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(
        json.dumps(summary, indent=1, default=lambda v: None if (isinstance(v, float) and math.isnan(v)) else str(v))
    )
    print(f"wrote {out}/ ({time.time() - t0:.1f} s)")
    return {"sweep": sweep, "monitor_acc": mon_acc}


if __name__ == "__main__":
    main()
