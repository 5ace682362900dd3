"""Head-level sweeps on whisper tiny: the fast sweep (recompute only what a patch changes,
rows batched) vs one at a time vs the plain loop, and attribution patching vs the sweep.

Every head of encoder self-attention, decoder self-attention and decoder cross-attention
(4 layers x 6 heads x 3 = 72 on tiny) is patched from an RMS-matched white-noise reference
(alpha = 1). Ratios are measured in the same run (process CPU time, one thread):

* ``plain``: every row through the whole model, one at a time (``share_encoder=False,
  batch_size=1``) - the naive loop;
* ``serial``: the fast sweep one component at a time (``batch_size=1``);
* ``batched``: the fast sweep with ``--batch-size`` rows per run;
for the teacher-forced sweep (metric: mean log-prob of the clean transcript; also per stack)
and the generation sweep (metric: transcript changed), and attribution patching (one
forward + backward for all heads) vs the batched sweep, with their Spearman correlation.

    python benchmarks/bench_patching.py [--items 1] [--batch-size 24] [--out results/bench_patching.json]

Uses the real tiny.en and espeak-ng speech when they load, else a random model of the same
shape on noise (timings depend only on the shape).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _models import load_model_or_random, speech_or_noise


def load_tiny():
    """``(model, description)``: tiny.en, or a random model of its shape."""
    return load_model_or_random("whisper-tiny.en")


def make_audio(n: int) -> list[np.ndarray]:
    return speech_or_noise(n)[0]


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def three_ways(label: str, run, batch_size: int, compare) -> dict:
    """Time ``run(batch_size, share_encoder)`` batched, serial and plain; check they agree."""
    batched, tb = timed(lambda: run(batch_size, True))
    serial, ts = timed(lambda: run(1, True))
    plain, tp = timed(lambda: run(1, False))
    out = {"batched_s": tb, "serial_s": ts, "plain_s": tp, "batched_vs_serial": ts / tb, "batched_vs_plain": tp / tb,
           "serial_vs_plain": tp / ts, "agreement_with_plain": compare(batched, plain)}
    print(f"{label:<34} batched {tb:6.1f} s  serial {ts:6.1f} s  plain {tp:6.1f} s  -> batched x{ts / tb:.2f} vs serial, "
          f"x{tp / tb:.2f} vs plain ({out['agreement_with_plain']})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--out", default="results/bench_patching.json")
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from hooked_asr.patching import (
        SweepItem, attribution_patching, components, continuation_logprob, patching_effects, record_reference,
        sweep, white_noise,
    )

    torch.set_grad_enabled(False)
    model, which = load_tiny()
    comps = components(model, kinds=["attn", "cross_attn"], heads=True)
    items = [SweepItem(f"item{i}", a) for i, a in enumerate(make_audio(args.items))]
    print(f"model: {which}; {len(comps)} heads; {len(items)} item(s); torch threads {torch.get_num_threads()}; "
          f"clock: process CPU time")
    res: dict = {"model": which, "n_heads": len(comps), "n_items": len(items), "batch_size": args.batch_size}

    def max_diff(a, b):
        return f"max |diff| {float(np.abs(a.table['value'].to_numpy() - b.table['value'].to_numpy()).max()):.1e}"

    def same(a, b):
        return f"same verdict on {float((a.table['value'].to_numpy() == b.table['value'].to_numpy()).mean()):.0%} of rows"

    kw = dict(reference="noise", mode="teacher_forced", metrics=["logprob"], max_new_tokens=args.max_new_tokens,
              progress=False)
    sweep(model, items[:1], comps[:2], "interpolate", batch_size=2, **kw)  # warm-up

    def tf_run(sub):
        return lambda bs, share: sweep(model, items, sub, "interpolate", batch_size=bs, share_encoder=share, **kw)

    res["teacher_forced"] = three_ways("teacher-forced, all heads", tf_run(comps), args.batch_size, max_diff)
    for stack in ("encoder", "decoder"):
        sub = [c for c in comps if c.stack == stack]
        res["teacher_forced"][stack] = three_ways(f"  {stack} heads ({len(sub)})", tf_run(sub), args.batch_size, max_diff)

    if not args.skip_generate:
        gkw = dict(reference="noise", metrics=["changed"], missing="keep", max_new_tokens=args.max_new_tokens,
                   progress=False)
        res["generate"] = three_ways(
            "generation, all heads",
            lambda bs, share: sweep(model, items, comps, "interpolate", batch_size=bs, share_encoder=share, **gkw),
            args.batch_size, same)

    # attribution patching vs the real (batched) sweep, per item, same metric
    t_attr = t_real = 0.0
    rhos = []
    for it in items:
        clean = model.transcribe(it.audio, max_new_tokens=args.max_new_tokens)
        tf = model.teacher_forced_inputs(it.audio, clean.tokens)
        ref_tf = model.teacher_forced_inputs(white_noise(it.audio, seed=0), clean.tokens)
        metric = lambda lg, tf=tf: continuation_logprob(lg, tf.tokens, tf.prompt_len)  # noqa: E731
        cache = record_reference(model, ref_tf.kwargs, comps)
        attr, ta = timed(lambda: attribution_patching(model, tf.kwargs, cache, comps, metric, reference_is_cache=True))
        real, tr = timed(lambda: patching_effects(model, tf.kwargs, cache, comps, metric, batch_size=args.batch_size))
        t_attr += ta
        t_real += tr
        rhos.append(float(spearmanr(attr["attribution"], real["effect"]).statistic))
    res["attribution"] = {"attribution_s": t_attr, "real_sweep_s": t_real, "speedup": t_real / t_attr,
                          "spearman": rhos}
    print(f"attribution patching: {t_attr:.1f} s vs real batched sweep {t_real:.1f} s -> x{t_real / t_attr:.1f} faster; "
          f"Spearman rho with real patching {np.round(rhos, 3).tolist()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
