"""Head-level sweeps on whisper tiny: the fast sweep (recompute only what a patch changes,
rows batched where it pays) vs one at a time vs the loops it replaces, and attribution
patching vs the sweep.

Every head of encoder self-attention, decoder self-attention and decoder cross-attention
(4 layers x 6 heads x 3 = 72 on tiny) is patched from an RMS-matched white-noise reference
(alpha = 1). Ratios are measured in the same run (process CPU time, one thread, the ways
interleaved round by round, medians of ``--repeats`` rounds):

* ``issue``: the one-at-a-time loop of the code issue 17 measured (its "today's loop";
  teacher-forced only, :func:`issue_loop`): the clean transcript, the reference and the clean
  run each through the whole model, then one run per component, an encoder component through
  the whole model and a decoder component from the item's clean encoder output;
* ``plain``: every row through the whole model, one at a time (``share_encoder=False,
  batch_size=1``) - the naive loop;
* ``serial``: the fast sweep one component at a time (``batch_size=1``);
* ``batched``: the fast sweep with ``--batch-size`` rows per run (encoder rows per run chosen
  per device: one at a time on CPU);
for the teacher-forced sweep (metric: mean log-prob of the clean transcript; also per stack)
and the generation sweep (metric: transcript changed), and attribution patching (one
forward + backward for all heads) vs the batched sweep, with their Spearman correlation.

    python benchmarks/bench_patching.py [--items 1] [--batch-size 24] [--repeats 3] [--out results/bench_patching.json]

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
from _timing import interleaved


def load_tiny():
    """``(model, description)``: tiny.en, or a random model of its shape."""
    return load_model_or_random("whisper-tiny.en")


def make_audio(n: int) -> list[np.ndarray]:
    return speech_or_noise(n)[0]


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


@torch.no_grad()
def issue_loop(model, items, comps, max_new_tokens: int) -> list[float]:
    """Teacher-forced log-prob per (item, component), one run per component, as the sweep did
    when issue 17 was filed: per item a clean greedy transcript (encoder included), the noise
    reference and the clean teacher-forced run through the whole model; per component the
    teacher-forced inputs afresh, an encoder component through the whole model, a decoder one
    from the item's clean encoder output (encoded once)."""
    from hooked_asr.patching import continuation_logprob, interpolate, patched, record_reference, white_noise_like
    from hooked_asr.patching.item_runs import generation_settings

    gen_kwargs, _ = generation_settings(model)
    values = []
    for it in items:
        feats = model.prepare_features(it.audio)
        tf0 = model.teacher_forced_inputs(it.audio)
        prompt = tf0.tokens[0, : tf0.prompt_len]
        gen = model.generate(**feats, prompt_ids=prompt, max_new_tokens=max_new_tokens, **gen_kwargs)
        clean = model.results_from_generation(gen, prompt)[0].tokens
        ref = record_reference(
            model, model.teacher_forced_inputs(white_noise_like(it.audio, seed=0), clean).kwargs, comps
        )
        tf = model.teacher_forced_inputs(it.audio, clean)
        continuation_logprob(model(**tf.kwargs), tf.tokens, tf.prompt_len)  # the clean value
        enc = None
        for c in comps:
            tf = model.teacher_forced_inputs(it.audio, clean)
            kwargs = tf.kwargs
            if c.stack == "decoder":
                if enc is None:
                    enc = model.finish_encoder(model.encode(**feats, stop_at_layer=model.n_layers["encoder"]), **feats)
                kwargs = {"decoder_input_ids": tf.kwargs["decoder_input_ids"], "encoder_hidden_states": enc}
            with patched(model, [interpolate(c, ref, 1.0)]) as tracker:
                tracker.reset()
                values.append(float(continuation_logprob(model(**kwargs), tf.tokens, tf.prompt_len)[0]))
    return values


def compare(label: str, ways: dict, repeats: int, reference: str, agree) -> dict:
    """Time the ``ways`` (name -> fn returning comparable values) interleaved; ratios to ``batched``."""
    outs = {k: fn() for k, fn in ways.items()}  # warm-up round, and the values compared
    p = interleaved(ways, repeats=repeats, warmup=0)
    out = {f"{k}_s": p.median(k) for k in ways}
    out.update({f"batched_vs_{k}": p.ratio(k, "batched") for k in ways if k != "batched"})
    if "serial" in ways and "plain" in ways:
        out["serial_vs_plain"] = p.ratio("plain", "serial")
    out["spread"] = max(p.spread(k) for k in ways)
    out[f"agreement_with_{reference}"] = agree(outs["batched"], outs[reference])
    times = "  ".join(f"{k} {p.median(k):5.1f} s" for k in ways)
    gains = ", ".join(f"x{out[f'batched_vs_{k}']:.2f} vs {k}" for k in ways if k != "batched")
    print(f"{label:<28} {times}  -> batched {gains} ({out[f'agreement_with_{reference}']}; spread {out['spread']:.2f})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--skip-plain", action="store_true", help="leave out the naive loop (the slowest way)")
    ap.add_argument("--out", default="results/bench_patching.json")
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from hooked_asr.patching import (
        SweepItem,
        attribution_patching,
        components,
        continuation_logprob,
        patching_effects,
        record_reference,
        sweep,
        white_noise_like,
    )

    torch.set_grad_enabled(False)
    model, which = load_tiny()
    comps = components(model, kinds=["attn", "cross_attn"], heads=True)
    items = [SweepItem(f"item{i}", a) for i, a in enumerate(make_audio(args.items))]
    print(
        f"model: {which}; {len(comps)} heads; {len(items)} item(s); torch threads {torch.get_num_threads()}; "
        f"clock: process CPU time"
    )
    res: dict = {
        "model": which,
        "n_heads": len(comps),
        "n_items": len(items),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "clock": "process CPU time, interleaved, medians",
    }

    def values(r):
        return r.table["value"].to_numpy() if hasattr(r, "table") else np.asarray(r)

    def max_diff(a, b):
        return f"max |diff| {float(np.abs(values(a) - values(b)).max()):.1e}"

    def same(a, b):
        return f"same verdict on {float((values(a) == values(b)).mean()):.0%} of rows"

    kw = dict(
        reference="noise",
        mode="teacher_forced",
        metrics=["logprob"],
        max_new_tokens=args.max_new_tokens,
        progress=False,
    )
    sweep(model, items[:1], comps[:2], "interpolate", batch_size=2, **kw)  # warm-up

    def tf_ways(sub):
        def run(bs, share):
            return lambda: sweep(model, items, sub, "interpolate", batch_size=bs, share_encoder=share, **kw)

        ways = {"batched": run(args.batch_size, True), "serial": run(1, True)}
        if not args.skip_plain:
            ways["plain"] = run(1, False)
        ways["issue"] = lambda: issue_loop(model, items, sub, args.max_new_tokens)
        return ways

    res["teacher_forced"] = compare("teacher-forced, all heads", tf_ways(comps), args.repeats, "issue", max_diff)
    for stack in ("encoder", "decoder"):
        sub = [c for c in comps if c.stack == stack]
        res["teacher_forced"][stack] = compare(
            f"  {stack} heads ({len(sub)})", tf_ways(sub), args.repeats, "issue", max_diff
        )

    if not args.skip_generate:
        gkw = dict(
            reference="noise", metrics=["changed"], missing="keep", max_new_tokens=args.max_new_tokens, progress=False
        )

        def gen(bs, share):
            return lambda: sweep(model, items, comps, "interpolate", batch_size=bs, share_encoder=share, **gkw)

        res["generate"] = compare(
            "generation, all heads",
            {"batched": gen(args.batch_size, True), "serial": gen(1, True), "plain": gen(1, False)},
            args.repeats,
            "plain",
            same,
        )

    # attribution patching vs the real (batched) sweep, per item, same metric
    t_attr = t_real = 0.0
    rhos = []
    for it in items:
        clean = model.transcribe(it.audio, max_new_tokens=args.max_new_tokens)
        tf = model.teacher_forced_inputs(it.audio, clean.tokens)
        ref_tf = model.teacher_forced_inputs(white_noise_like(it.audio, seed=0), clean.tokens)
        metric = lambda lg, tf=tf: continuation_logprob(lg, tf.tokens, tf.prompt_len)  # noqa: E731
        cache = record_reference(model, ref_tf.kwargs, comps)
        attr, ta = timed(lambda: attribution_patching(model, tf.kwargs, cache, comps, metric, reference_is_cache=True))
        real, tr = timed(lambda: patching_effects(model, tf.kwargs, cache, comps, metric, batch_size=args.batch_size))
        t_attr += ta
        t_real += tr
        rhos.append(float(spearmanr(attr["attribution"], real["effect"]).statistic))
    res["attribution"] = {"attribution_s": t_attr, "real_sweep_s": t_real, "speedup": t_real / t_attr, "spearman": rhos}
    print(
        f"attribution patching: {t_attr:.1f} s vs real batched sweep {t_real:.1f} s -> x{t_real / t_attr:.1f} faster; "
        f"Spearman rho with real patching {np.round(rhos, 3).tolist()}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
