"""Cost of EAP and EAP-IG over the full encoder-decoder graph, in forward-equivalents, against the real sweep.

On whisper tiny (real tiny.en when it loads, else a random model of the same shape), one
espeak utterance teacher-forced on its transcript, an RMS-matched white-noise reference
recorded once and shared by every method. Measured in the same run:

* ``forward``: one teacher-forced forward (batch 1): the unit;
* ``EAP``: one forward + backward and the edge scoring (every edge of the graph);
* ``EAP-IG (m steps)``: one clean forward + ``m`` forward + backward passes (``--ig-batch``
  steps per batched pass), the scoring and the completeness check (one more forward: every edge
  patched); target ``<= 2 (m + 1) + 1`` forward-equivalents;
* ``EAP-IG (auto, ...)``: ``steps='auto'`` (8, 24, 72, ... up to ``--max-steps``, every gradient kept)
  with the noise reference and with a contrastive pair's corrupt clip (``word_swap``: "book" spoken as
  "letter"; the metric is the logit difference there): the steps it chose, its completeness error and
  its cost against ``2 (n + 1) + 1`` for the ``n`` steps it ended at;
* ``real sweep``: :func:`hooked_asr.patching.patching_effects` over every head and MLP
  (batched ``--batch-size`` components per forward), the node-level answer EAP estimates.

    python benchmarks/bench_eap.py [--steps 4 8] [--ig-batch 4] [--max-steps 72] [--out results/bench_eap.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _timing import median_seconds
from bench_patching import load_tiny, make_audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--ig-batch", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=72, help="cap of the adaptive EAP-IG runs")
    ap.add_argument("--out", default="results/bench_eap.json")
    args = ap.parse_args()

    from hooked_asr.circuits.eap import eap, eap_ig
    from hooked_asr.circuits.graph import Graph
    from hooked_asr.circuits.path_patching import record_graph_reference
    from hooked_asr.patching.contrastive import word_swap
    from hooked_asr.patching import (
        components,
        continuation_logprob,
        patching_effects,
        record_reference,
        reference_inputs,
        white_noise_like,
    )

    model, which = load_tiny()
    audio = make_audio(1)[0]
    with torch.no_grad():
        clean = model.transcribe(audio, language="en") if model.tokenizer is not None else None
    tokens = clean.tokens if clean is not None and clean.tokens else [1, 2, 3, 4, 5]
    tf = model.teacher_forced_inputs(audio, tokens)
    ref_kwargs = reference_inputs(model, tf.kwargs, white_noise_like(audio, seed=0))  # the clean prompt
    metric = lambda lg: continuation_logprob(lg, tf.tokens, tf.prompt_len)  # noqa: E731
    graph = Graph.from_model(model)
    comps = components(model, heads=True)
    ref = record_graph_reference(model, ref_kwargs, graph)
    ref.update(record_reference(model, ref_kwargs, comps))

    def forward():
        with torch.no_grad():
            model(**tf.kwargs)

    t_fwd = median_seconds(forward, args.repeats)
    rows = {"forward": t_fwd}
    rows["EAP"] = median_seconds(
        lambda: eap(model, tf.kwargs, ref, metric, graph, reference_is_cache=True), args.repeats
    )
    for m in args.steps:
        rows[f"EAP-IG ({m} steps)"] = median_seconds(
            lambda m=m: eap_ig(
                model,
                tf.kwargs,
                ref,
                metric,
                graph,
                steps=m,
                batch_size=args.ig_batch,
                reference_is_cache=True,
                progress=False,
            ),
            max(1, args.repeats - 1),
        )
    auto: dict[str, dict] = {}
    runs = [("noise", tf.kwargs, ref, metric)]
    if model.tokenizer is not None:
        x = word_swap(["he", "was", "reading", "a", "book"], 4, "letter").inputs(model)
        runs.append(("contrastive pair", x.clean, x.corrupt, x.metric))
    for label, kw, r, fn in runs:
        t0 = time.perf_counter()
        s = eap_ig(
            model, kw, r, fn, graph, steps="auto", max_steps=args.max_steps, batch_size=args.ig_batch, progress=False
        )
        name = f"EAP-IG (auto, {label})"
        rows[name] = time.perf_counter() - t0
        auto[name] = {"steps": s.steps, "completeness": s.meta["completeness"]}
    t0 = time.perf_counter()
    patching_effects(model, tf.kwargs, ref, comps, metric, batch_size=args.batch_size)
    rows[f"real sweep ({len(comps)} components)"] = time.perf_counter() - t0

    print(
        f"model: {which}; graph: {len(graph.senders)} senders, {len(graph.receivers)} receivers, "
        f"{graph.n_edges} edges; one forward = {t_fwd * 1e3:.0f} ms"
    )
    print(f"{'method':32s} {'seconds':>8s} {'forward-eq':>11s} {'target':>8s}")
    out = {"model": which, "n_edges": graph.n_edges, "n_components": len(comps), "forward_s": t_fwd, "methods": {}}
    for name, t in rows.items():
        fe = t / t_fwd
        target = None
        if name in auto:
            target = 2 * (auto[name]["steps"] + 1) + 1
        elif name.startswith("EAP-IG"):
            target = 2 * (int(name.split("(")[1].split()[0]) + 1) + 1
        print(
            f"{name:32s} {t:8.2f} {fe:11.1f} {('<= ' + str(target)) if target else '':>8s}"
            + ("" if target is None else ("  ok" if fe <= target else "  OVER"))
        )
        out["methods"][name] = {"seconds": t, "forward_equivalents": fe, "target": target, **auto.get(name, {})}
        if name in auto:
            c = auto[name]["completeness"]
            print(
                f"{'':32s} steps chosen: {auto[name]['steps']} (history {[h[0] for h in c['history']]}), "
                f"completeness error {100 * c['rel_error']:.1f} %{' (capped)' if c['capped'] else ''}"
            )
    sweep = rows[f"real sweep ({len(comps)} components)"]
    for m in args.steps:
        print(
            f"EAP-IG ({m} steps) is x{sweep / rows[f'EAP-IG ({m} steps)']:.1f} faster than the real sweep "
            f"and scores {graph.n_edges} edges instead of {len(comps)} nodes"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
