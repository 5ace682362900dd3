"""``hooked-asr patch AUDIO...``: patch or ablate components (per head) and tabulate the effect.

    hooked-asr patch speech.wav --kinds cross_attn --stacks decoder --reference noise --out results/patch
    hooked-asr patch --say "the cat sat on the mat" --intervention zero --mode teacher_forced --metrics logprob

Writes ``<out>/patch.csv`` (tidy: component, item, metric, value, clean, ...),
``<out>/patch.json`` (config, per-component summary, timing) and
``<out>/heatmap_<metric>.png`` (layer x head). ``<out>/results.jsonl`` makes reruns resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hooked_asr.cli import UsageError
from hooked_asr.cli._common import (
    add_audio_arguments,
    add_model_argument,
    audio_inputs,
    load_model_from_args,
    positive_int,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patch", help="component / head patching and ablation sweeps (table + heatmap)")
    add_audio_arguments(p, many=True, audio_help="wav/flac files")
    add_model_argument(p)
    p.add_argument(
        "--components",
        nargs="*",
        default=None,
        help="explicit components, e.g. decoder.blocks.1.cross_attn.head.3 (default: enumerate)",
    )
    p.add_argument(
        "--kinds",
        nargs="+",
        default=["attn", "cross_attn", "mlp"],
        choices=["attn", "cross_attn", "mlp"],
        help="component kinds to enumerate",
    )
    p.add_argument(
        "--stacks",
        nargs="+",
        default=["encoder", "decoder"],
        choices=["encoder", "decoder"],
        help="stacks to enumerate",
    )
    p.add_argument("--layers", nargs="*", type=int, default=None, help="layer indices to enumerate (default: all)")
    p.add_argument("--no-heads", action="store_true", help="whole attention outputs instead of single heads")
    p.add_argument(
        "--intervention",
        default="interpolate",
        choices=["interpolate", "zero", "mean"],
        help="interpolate towards the reference, or zero / mean ablation",
    )
    p.add_argument("--alpha", type=float, default=1.0, help="a~ = (1-alpha) a + alpha a_ref (>= 0)")
    p.add_argument(
        "--reference",
        default="noise",
        help="'noise' (RMS-matched white noise), 'silence', or an audio file (same for every input)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the noise reference")
    p.add_argument(
        "--mode",
        default="generate",
        choices=["generate", "teacher_forced"],
        help="decode under the patch, or score the clean transcript teacher-forced",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="default: changed wer_delta n_tokens (generate), logprob (teacher_forced); generate: changed wer wer_delta loop loop_resolved repeated n_tokens; teacher_forced: logprob",
    )
    p.add_argument(
        "--missing",
        default="keep",
        choices=["keep", "error"],
        help="decoder positions the reference lacks (longer patched transcripts): leave unpatched, or fail",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="components per batched forward (1 = one at a time)"
    )
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        help="token limit per patched transcript (default: the model's)",
    )
    p.add_argument("--language", default=None, help="language for multilingual models (default en)")
    p.add_argument("--out", default="results/patch", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_layers(model, stacks: list[str], layers: list[int] | None) -> None:
    """``--layers`` must exist in every stack asked for (components() would silently drop them)."""
    sizes = {s: getattr(model.cfg, s).n_layers for s in stacks if getattr(model.cfg, s, None) is not None}
    bad = [l for l in layers or [] if any(not 0 <= l < n for n in sizes.values())]
    if bad:
        have = ", ".join(f"the {s} has {n} blocks (0-{n - 1})" for s, n in sizes.items())
        raise UsageError(f"--layers {' '.join(map(str, bad))}: {have}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from hooked_asr.loading.registry import DEFAULT_MODEL
    from hooked_asr.patching import SweepItem, components, mean_activations, sweep
    from hooked_asr.patching.plotting import plot_head_heatmaps

    inputs = audio_inputs(args)
    model = load_model_from_args(args)
    ref_file = None
    if args.reference not in ("noise", "silence"):
        from hooked_asr.audio import load_audio

        ref_file = load_audio(args.reference)
    items = []
    for name, audio, text in inputs:
        if not isinstance(audio, np.ndarray):
            from hooked_asr.audio import load_audio

            audio = load_audio(audio)
        items.append(SweepItem(name, audio, reference=ref_file, text=text))

    if args.components:
        comps = list(args.components)
    else:
        _check_layers(model, args.stacks, args.layers)
        comps = components(model, kinds=args.kinds, heads=not args.no_heads, stacks=args.stacks, layers=args.layers)
    tf_kwargs = {"language": args.language} if args.language else {}
    means = None
    if args.intervention == "mean":
        # the mean over the inputs themselves, each teacher-forced on its own transcript
        kw = []
        for it in items:
            res = model.transcribe(it.audio, language=args.language) if args.language else model.transcribe(it.audio)
            kw.append(model.teacher_forced_inputs(it.audio, res.tokens, **tf_kwargs).kwargs)
        means = mean_activations(model, kw, comps)
    metrics = args.metrics or (["changed", "wer_delta", "n_tokens"] if args.mode == "generate" else ["logprob"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = sweep(
        model,
        items,
        comps,
        args.intervention,
        args.alpha,
        mode=args.mode,
        metrics=metrics,
        reference=None if ref_file is not None else args.reference,
        reference_seed=args.seed,
        means=means,
        missing=args.missing,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        results_path=out / "results.jsonl",
        progress=not args.no_progress,
        teacher_forced_kwargs=tf_kwargs,
    )
    result.table.to_csv(out / "patch.csv", index=False)
    summary = result.summary()
    (out / "patch.json").write_text(
        json.dumps(
            {
                "config": {
                    **result.config,
                    "model": args.model or DEFAULT_MODEL,
                    "batch_size": args.batch_size,
                    "items": [it.id for it in items],
                },
                "seconds": result.seconds,
                "batched_runs": result.n_batched_runs,
                "summary": {
                    c: {m: (None if v != v else float(v)) for m, v in row.items()} for c, row in summary.iterrows()
                },
            },
            indent=1,
        )
    )
    figs = []
    if result.table["head"].notna().any():
        for m in sorted(result.table["metric"].unique()):
            figs.append(plot_head_heatmaps(result, m, out / f"heatmap_{m}.png"))
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"\n{len(result.table)} rows in {result.seconds:.1f} s ({result.n_batched_runs} batched runs); "
        f"wrote {out / 'patch.csv'}, {out / 'patch.json'}" + "".join(f", {f}" for f in figs)
    )
    return 0


__all__ = ["add_parser", "run"]
