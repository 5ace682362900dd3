"""Sparse circuits on contrastive audio pairs, beside the white-noise reference.

For one contrastive pair (hooked_asr.patching.contrastive: "he was reading a book" with "book" spoken
as "letter" in the same slot, everything else sample-identical), the clean text is teacher-forced with
the clean prompt in both runs and the metric is the logit difference at the swapped word,

    m = logit(" book") - logit(" letter")      (at the position that predicts the word)

Two references: the corrupt clip of the pair, and RMS-matched white noise of the clean clip (run with
the clean prompt). For each: EAP-IG over the full encoder-decoder graph (steps='auto' up to
--max-steps; its completeness is reported), then top-k circuits by |score| evaluated by real
patching (every edge outside the circuit patched to the reference): faithfulness
f = (m(C) - m(ref)) / (m(clean) - m(ref)), MIB's CPR (signed ranking) and CMD (|score| ranking), and
the smallest circuit with f >= --target (grid, then bisection on k between the bracketing grid points;
f need not be monotone in k, so this is the smallest k found by that search).

    python scripts/contrastive_circuits.py --models whisper-tiny.en whisper-base --out docs/figures/contrastive

Writes ``contrastive_circuits.json`` (everything measured) and ``contrastive_circuits.png`` (the curves).
"""

from __future__ import annotations

import json
import os
import time

import _common

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def smallest_k(evaluate, curve, target: float, n_edges: int, max_evals: int = 8) -> dict:
    """The smallest k on the grid with f >= target, refined by bisection below it."""
    pts = sorted(zip(curve["k"], curve["faithfulness"]))
    hit = next((i for i, (_, f) in enumerate(pts) if f >= target), None)
    if hit is None:
        return {"k": None, "fraction": None, "evals": 0}
    lo, hi = (pts[hit - 1][0] if hit else 0), pts[hit][0]
    evals = 0
    while hi - lo > 1 and evals < max_evals:
        mid = (lo + hi) // 2
        if evaluate(mid) >= target:
            hi = mid
        else:
            lo = mid
        evals += 1
    return {"k": int(hi), "fraction": hi / n_edges, "evals": evals, "bracket": [int(lo), int(hi)]}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--models", nargs="+", default=["whisper-tiny.en"])
    ap.add_argument("--references", nargs="+", default=["pair", "noise"], choices=["pair", "noise"])
    ap.add_argument("--max-steps", type=int, default=24, help="cap of EAP-IG's adaptive steps (8, 24, 72, ...)")
    ap.add_argument("--ig-batch", type=int, default=8)
    ap.add_argument("--target", type=float, default=0.8, help="faithfulness the smallest circuit must reach")
    ap.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=list(FRACTIONS),
        help="circuit sizes (fractions of the edges); MIB's grid by default (CPR / CMD need it)",
    )
    ap.add_argument("--bisect", type=int, default=8, help="bisection steps for the smallest circuit")
    ap.add_argument("--out", default="docs/figures/contrastive")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import hooked_asr
    from hooked_asr.circuits import Graph, eap_ig
    from hooked_asr.circuits.circuit import area_under, circuit_baselines, faithfulness_curve
    from hooked_asr.circuits.path_patching import as_reference_cache
    from hooked_asr.patching.contrastive import word_swap
    from hooked_asr.patching import white_noise_like

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out_dir = _common.ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    fractions = tuple(args.fractions)
    pair = word_swap(["he", "was", "reading", "a", "book"], 4, "letter")
    results: dict = {
        "pair": pair.name,
        "metric": "logit(' book') - logit(' letter')",
        "target": args.target,
        "fractions": list(fractions),
        "models": {},
    }
    fig, axes = plt.subplots(1, len(args.models), figsize=(5.0 * len(args.models), 3.6), squeeze=False)
    for mi, name in enumerate(args.models):
        model = hooked_asr.load_model(name).eval()
        x = pair.inputs(model)
        graph = Graph.from_model(model)
        res = {"n_edges": graph.n_edges, "references": {}}
        for ref_name in args.references:
            t0 = time.time()
            ref_audio = x.corrupt if ref_name == "pair" else white_noise_like(pair.clean, seed=0)
            cache = as_reference_cache(model, graph, ref_audio, target_kwargs=x.clean)
            scores = eap_ig(
                model,
                x.clean,
                cache,
                x.metric,
                graph,
                steps="auto",
                max_steps=args.max_steps,
                batch_size=args.ig_batch,
                progress=True,
            )
            t_ig = time.time() - t0
            base = circuit_baselines(model, graph, x.clean, cache, x.metric)
            absolute = faithfulness_curve(model, scores, x.clean, cache, x.metric, fractions=fractions, absolute=True)
            signed = faithfulness_curve(model, scores, x.clean, cache, x.metric, fractions=fractions, absolute=False)

            def evaluate(k: int) -> float:
                return scores.circuit(k).evaluate(model, x.clean, cache, x.metric, baselines=base).faithfulness

            small = smallest_k(evaluate, absolute, args.target, graph.n_edges, args.bisect)
            mib_grid = fractions == FRACTIONS
            res["references"][ref_name] = {
                "clean": base[0],
                "reference": base[1],
                "eap_ig_seconds": t_ig,
                "seconds": time.time() - t0,
                "completeness": scores.meta.get("completeness"),
                "steps": scores.steps,
                "cpr": area_under(fractions, signed["faithfulness"]) if mib_grid else None,
                "cmd": area_under(fractions, (1 - absolute["faithfulness"]).abs()) if mib_grid else None,
                "smallest": small,
                "curve_abs": absolute[["k", "fraction", "faithfulness"]].to_dict(orient="records"),
                "curve_signed": signed[["k", "fraction", "faithfulness"]].to_dict(orient="records"),
            }
            ax = axes[0, mi]
            ax.plot(
                absolute["fraction"].clip(lower=1e-4), absolute["faithfulness"], "o-", label=f"{ref_name} (|score|)"
            )
            ax.plot(signed["fraction"].clip(lower=1e-4), signed["faithfulness"], "x--", label=f"{ref_name} (signed)")
            results["models"][name] = res
            _write(out_dir / "contrastive_circuits.json", json.dumps(results, indent=1, default=float))
            print(
                name,
                ref_name,
                json.dumps(
                    {k: v for k, v in res["references"][ref_name].items() if not k.startswith("curve")}, default=float
                ),
                flush=True,
            )
        ax = axes[0, mi]
        ax.axhline(args.target, color="k", lw=0.6, ls=":")
        ax.axhline(1.0, color="k", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of edges kept (top-k)")
        ax.set_ylabel("faithfulness")
        ax.set_title(f"{name}: {graph.n_edges} edges", fontsize=9)
        ax.legend(fontsize=7)
        results["models"][name] = res
        _write(out_dir / "contrastive_circuits.json", json.dumps(results, indent=1, default=float))
    fig.tight_layout()
    tmp = out_dir / "contrastive_circuits.tmp.png"
    fig.savefig(tmp, dpi=130)
    os.replace(tmp, out_dir / "contrastive_circuits.png")


def _write(path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
