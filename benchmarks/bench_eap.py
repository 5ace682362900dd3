"""Cost of EAP and EAP-IG over the full encoder-decoder graph, in forward-equivalents, against the real sweep.

On whisper tiny (real tiny.en when it loads, else a random model of the same shape), one
espeak utterance teacher-forced on its transcript, an RMS-matched white-noise reference
recorded once and shared by every method. Measured in the same run:

* ``forward``: one teacher-forced forward (batch 1): the unit;
* ``EAP``: one forward + backward and the edge scoring (every edge of the graph);
* ``EAP-IG (m steps)``: one clean forward + ``m`` forward + backward passes (``--ig-batch``
  steps per batched pass) and the scoring; target ``<= 2 (m + 1)`` forward-equivalents;
* ``real sweep``: :func:`hooked_asr.patching.patching_effects` over every head and MLP
  (batched ``--batch-size`` components per forward), the node-level answer EAP estimates.

    python benchmarks/bench_eap.py [--steps 4 8] [--ig-batch 4] [--out results/bench_eap.json]
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
    ap.add_argument("--out", default="results/bench_eap.json")
    args = ap.parse_args()

    from hooked_asr.circuits.eap import eap, eap_ig
    from hooked_asr.circuits.graph import Graph
    from hooked_asr.circuits.path_patching import record_graph_reference
    from hooked_asr.patching import components, continuation_logprob, patching_effects, record_reference, white_noise_like

    model, which = load_tiny()
    audio = make_audio(1)[0]
    with torch.no_grad():
        clean = model.transcribe(audio, language="en") if model.tokenizer is not None else None
    tokens = clean.tokens if clean is not None and clean.tokens else [1, 2, 3, 4, 5]
    tf = model.teacher_forced_inputs(audio, tokens)
    ref_kwargs = model.teacher_forced_inputs(white_noise_like(audio, seed=0), tokens).kwargs
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
    rows["EAP"] = median_seconds(lambda: eap(model, tf.kwargs, ref, metric, graph, reference_is_cache=True), args.repeats)
    for m in args.steps:
        rows[f"EAP-IG ({m} steps)"] = median_seconds(
            lambda m=m: eap_ig(model, tf.kwargs, ref, metric, graph, steps=m, batch_size=args.ig_batch,
                               reference_is_cache=True, progress=False), max(1, args.repeats - 1))
    t0 = time.perf_counter()
    patching_effects(model, tf.kwargs, ref, comps, metric, batch_size=args.batch_size)
    rows[f"real sweep ({len(comps)} components)"] = time.perf_counter() - t0

    print(f"model: {which}; graph: {len(graph.senders)} senders, {len(graph.receivers)} receivers, "
          f"{graph.n_edges} edges; one forward = {t_fwd * 1e3:.0f} ms")
    print(f"{'method':32s} {'seconds':>8s} {'forward-eq':>11s} {'target':>8s}")
    out = {"model": which, "n_edges": graph.n_edges, "n_components": len(comps), "forward_s": t_fwd, "methods": {}}
    for name, t in rows.items():
        fe = t / t_fwd
        target = None
        if name.startswith("EAP-IG"):
            m = int(name.split("(")[1].split()[0])
            target = 2 * (m + 1)
        print(f"{name:32s} {t:8.2f} {fe:11.1f} {('<= ' + str(target)) if target else '':>8s}"
              + ("" if target is None else ("  ok" if fe <= target else "  OVER")))
        out["methods"][name] = {"seconds": t, "forward_equivalents": fe, "target": target}
    sweep = rows[f"real sweep ({len(comps)} components)"]
    for m in args.steps:
        print(f"EAP-IG ({m} steps) is x{sweep / rows[f'EAP-IG ({m} steps)']:.1f} faster than the real sweep "
              f"and scores {graph.n_edges} edges instead of {len(comps)} nodes")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
