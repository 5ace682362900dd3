"""Section 4.1 of "Beyond Transcription": what the encoder knows beyond the words, layer by layer.

For each task a labelled espeak-ng set is built (``hooked_asr.datasets.labelled``), the residual
stream after every encoder block (``encoder.blocks.{l}.hook_resid_post``, mean over the clip's
audio frames) is extracted to a resumable activation store, and one logistic-regression probe per
layer is trained on a stratified 80/20 split (the same split for every layer):

* gender  - espeak male vs female variants of the same sentence and voice;
* accent  - English accents as espeak voices (en-us, en-gb, en-gb-scotland, en-029);
* noise   - the same utterance clean vs mixed with noise at ``--snr`` dB;
* speech  - speech vs non-speech (noise colours, tones, chirps, synthetic music) of equal length,
            probed on the **decoder** at the end-of-text token (the paper's §4.2 claim is about the
            decoder: 100 % from layers 10-28 of large-v3);
* language (opt-in, ``--tasks ...,language``) - en/de/fr/es parallel sentences.

The paper's protocol ([BT] §4.1): LibriSpeech gender, 2,000 train / 500 test (test-clean), best
encoder layer 25, 94.6 %; clean vs noisy, dev-clean/dev-other -> test-clean/test-other, layer 27,
90.0 % (sizes not in the text: we use gender's); accent, English Accent DataSet, 4 classes, 600 per
class train / 337 test, layer 22, 97.0 %. Speech vs non-speech ([BT] §4.2): 400 + 400, decoder final
token, 100 % at layers 10-28. These sizes are the defaults (``--n`` overrides them with n per class
and ``--test-size``). Our data are espeak-ng voices, far easier to tell apart than real speakers,
and tiny.en has 4 encoder layers: compare the shape by relative depth, not the numbers.

Writes ``<out>/<task>/probe_sweep.{csv,json,png}``, ``<out>/summary.{csv,json}`` and
``<out>/probing_enrichment.png`` (test accuracy per layer, one curve per task).

    python scripts/probing_enrichment.py --model whisper-tiny.en --n 32 --out results/probing_enrichment
    python scripts/probing_enrichment.py --n 4 --out /tmp/x          # smoke run (< 1 min on tiny.en, CPU)
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import _common
from _common import add_probe_options

PAPER_REFERENCE = (
    "Paper ([BT] §4.1-4.2, Whisper large-v3): gender 94.6 % at encoder layer 25 (2,000/500 LibriSpeech); clean vs "
    "noisy 90.0 % at layer 27; accent 97.0 % at layer 22 (4 classes, 2,400/337); speech vs non-speech 100 % at "
    "decoder layers 10-28, 99.17 % at layer 31 (800 clips)."
)
# task -> (paper's best layer or range, paper accuracy, train size, test size, where); None: not in the text
PAPER = {
    "gender": ("25", 0.946, 2000, 500, "§4.1"),
    "noise": ("27", 0.900, None, None, "§4.1"),
    "accent": ("22", 0.970, 2400, 337, "§4.1"),
    "speech": ("decoder 10-28 (L31: 0.992)", 1.000, None, None, "§4.2 (800 clips)"),
    "language": (None, None, None, None, "not in the paper"),
}
SUMMARY_COLUMNS = [
    "task",
    "site",
    "paper layer (of 32)",
    "paper accuracy",
    "our best layer (depth)",
    "Test Acc",
    "Train Acc",
    "F1",
    "n train / test",
]
TASKS = ("gender", "accent", "noise", "speech", "language")
DEFAULT_TASKS = ("gender", "accent", "noise", "speech")


def paper_sizes(task: str) -> tuple[int, float]:
    """``(n per class, test share)`` from the paper's split sizes (gender's where it gives none)."""
    n_classes = {"accent": 4, "language": 4}.get(task, 2)
    _, _, n_train, n_test, _ = PAPER[task]
    if task == "speech":
        return 400, 0.3  # 800 balanced clips; the split is not in the text
    if n_train is None:
        n_train, n_test = PAPER["gender"][2], PAPER["gender"][3]
    return -(-(n_train + n_test) // n_classes), n_test / (n_train + n_test)


def build_dataset(task: str, n: int, seed: int, snr_db: float, progress: bool):
    from hooked_asr.datasets import labelled as L

    if task == "gender":
        return L.gender_dataset(n, seed=seed, progress=progress)
    if task == "accent":
        return L.accent_dataset(n_per_class=n, seed=seed, progress=progress)
    if task == "noise":
        return L.noisy_dataset(n, snr_db=snr_db, seed=seed, progress=progress)
    if task == "speech":
        return L.speech_nonspeech_dataset(n, seed=seed, progress=progress)
    if task == "language":
        return L.language_dataset(n_per_class=n, seed=seed, progress=progress)
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def parse_args(argv=None):
    ap = _common.parser(__doc__)
    ap.add_argument("--model", default="whisper-tiny.en", help="registry name, local dir or hub id")
    ap.add_argument("--n", type=int, default=None, help="items per class (default: the paper's split sizes)")
    ap.add_argument("--out", default="results/probing_enrichment")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help=f"comma-separated, from {TASKS}")
    ap.add_argument(
        "--stack",
        choices=["encoder", "decoder", "all"],
        default="encoder",
        help="residual streams probed for gender / accent / noise / language (decoder hooks need a "
        "transcription per clip)",
    )
    ap.add_argument(
        "--speech-stack",
        choices=["encoder", "decoder", "all"],
        default="decoder",
        help="residual streams for speech vs non-speech (the paper: decoder, final token)",
    )
    ap.add_argument("--snr", type=float, default=0.0, help="SNR (dB) of the noisy class")
    add_probe_options(ap, l2=1e-3, test_size=None)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    from hooked_asr.activations import extract_activations
    from hooked_asr.plotting import plot_curves
    from hooked_asr.probing import model_hooks, probe_layers

    args = parse_args(argv)
    if args.smoke:
        args.n = min(args.n or 4, 4)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            raise SystemExit(f"unknown task {t!r}; choose from {TASKS}")
    model, out, t0 = _common.setup(args)
    name = getattr(model.cfg, "name", args.model)
    print(f"{name}: probing {tasks} ({'n=' + str(args.n) + ' per class' if args.n else 'the paper split sizes'})")
    print(PAPER_REFERENCE)

    summary, curves, sweeps, table, hooks_of = [], {}, {}, [], {}
    for task in tasks:
        stack = args.speech_stack if task == "speech" else args.stack
        hooks = hooks_of[task] = model_hooks(model, stack)
        n, test_size = (args.n, args.test_size or 0.2) if args.n else paper_sizes(task)
        test_size = args.test_size or test_size
        ds = build_dataset(task, n, args.seed, args.snr, progress=True)
        language = "en" if task != "language" else None  # the language task lets a multilingual model detect
        store = extract_activations(
            model,
            ds,
            hooks,
            out / "acts" / task,
            batch_size=args.batch_size,
            shard_size=256,
            dataset_id=f"{ds.dataset_id}|{name}",
            language=language,
            progress=True,
        )
        title = f"{task} ({', '.join(ds.label_names)}) - {name}"
        sweep = probe_layers(store, hooks=hooks, test_size=test_size, seed=args.seed, l2=args.l2, title=title)
        sweep.save(out / task)
        sweeps[task] = sweep
        print()
        print(sweep.summary())
        best = sweep.best_layer
        for r in sweep.rows:
            summary.append(
                {
                    "task": task,
                    "hook": r["hook"],
                    "stack": r["stack"],
                    "layer": r["layer"],
                    "n_train": r["n_train"],
                    "n_test": r["n_test"],
                    "train_acc": r["train_acc"],
                    "test_acc": r["test_acc"],
                    "f1": r["f1"],
                    "chance": r["chance"],
                    "best": r["key"] == best,
                }
            )
        curves[task] = np.array([r["test_acc"] for r in sweep.rows], dtype=float)
        b = next(r for r in sweep.rows if r["key"] == best)
        n_layers = len(sweep.rows)
        p_layer, p_acc, _, _, where = PAPER[task]
        table.append(
            dict(
                zip(
                    SUMMARY_COLUMNS,
                    [
                        task,
                        f"{b['stack']} ({'final token' if b['stack'] == 'decoder' else 'mean over frames'})",
                        f"{p_layer} ({where})" if p_layer else "-",
                        p_acc,
                        f"L{b['layer']} ({_common.relative_depth(int(b['layer']), n_layers):.2f})",
                        b["test_acc"],
                        b["train_acc"],
                        b["f1"],
                        f"{b['n_train']} / {b['n_test']}",
                    ],
                )
            )
        )

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    (out / "summary.json").write_text(
        json.dumps(
            {
                "model": name,
                "n_per_class": args.n,
                "tasks": tasks,
                "hooks": hooks_of,
                "paper_reference": PAPER_REFERENCE,
                "best_layer": {t: s.best_layer for t, s in sweeps.items()},
                "table": table,
                "test_acc": {t: [None if np.isnan(v) else float(v) for v in c] for t, c in curves.items()},
                "seconds": round(time.time() - t0, 1),
            },
            indent=1,
        )
    )
    plot_curves(
        curves,
        x=list(range(max(len(c) for c in curves.values()))),
        xlabel=f"layer ({args.stack}; speech: {args.speech_stack})",
        ylabel="held-out probe accuracy",
        title=f"Linear probes per layer - {name}",
        path=out / "probing_enrichment.png",
    )
    print()
    _common.print_table(
        table, f"§4.1 / §4.2 probes, {name} (best layer by held-out accuracy) beside [BT] large-v3", SUMMARY_COLUMNS
    )
    print(
        f"wrote {out}/summary.csv, summary.json, probing_enrichment.png and per-task tables ({time.time() - t0:.1f} s)"
    )
    return {"sweeps": sweeps, "summary": summary, "table": table}


if __name__ == "__main__":
    main()
