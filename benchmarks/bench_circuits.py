"""Circuit helpers on a 30-s input: time and memory of the ActivationCache helpers against a plain
``run_with_cache`` measured in the same run.

Head results are computed from ``hook_z`` and ``W_O`` on demand; the benchmark reports what
caching them instead would cost (``hook_result`` via ``set_use_attn_result``, sized by the
model's own estimate, which is checked against the bytes actually cached). Ratios:

* helper time / time of the plain ``run_with_cache`` that built the cache,
* helper output bytes / bytes of that cache, and the cache with ``hook_result`` / without,
* direct logit attribution of a whole transcript / the transcription itself.

    python benchmarks/bench_circuits.py [--model whisper-tiny.en] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _timing import median_seconds

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "We should meet again next week to finish the report.",
    "She sells sea shells by the sea shore.",
]


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(v) for v in x)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    import hooked_asr
    from hooked_asr.circuits import dla_transcript
    from hooked_asr.datasets.espeak import synthesize

    model = hooked_asr.load_model(args.model).to(args.device)
    parts, total = [], 0
    while total < 28 * 16000:  # speech filling the 30-s window
        a = synthesize(SENTENCES[len(parts) % len(SENTENCES)])
        parts.append(a)
        total += len(a)
    audio = np.concatenate(parts)[: 29 * 16000]
    tokens = model.transcribe(audio).tokens
    tf = model.teacher_forced_inputs(audio, tokens)
    inputs = tf.kwargs
    print(
        f"{args.model} on {args.device}: {len(audio) / 16000:.1f} s of espeak speech, {len(tokens)} transcript tokens"
    )

    with torch.no_grad():
        est = model.estimate_cache_size(**inputs)
        t_cache = median_seconds(lambda: model.run_with_cache(**inputs), args.repeats, args.device)
        _, cache = model.run_with_cache(**inputs, return_cache_object=True)
        cache_bytes = sum(_nbytes(v) for v in cache.values())
        model.set_use_attn_result(True)
        est_res = model.estimate_cache_size(**inputs)
        model.set_use_attn_result(False)
        toks = tf.tokens[:, 1:]
        full = cache.get_full_resid_decomposition(expand_neurons=False)
        helpers = {
            "stack_head_results (decoder: self + cross)": lambda: cache.stack_head_results(),
            "stack_head_results (encoder)": lambda: cache.stack_head_results(stack="encoder"),
            "decompose_resid (decoder, apply_ln)": lambda: cache.decompose_resid(apply_ln=True),
            "accumulated_resid (encoder, apply_ln)": lambda: cache.accumulated_resid(apply_ln=True, stack="encoder"),
            "get_full_resid_decomposition (decoder, MLPs whole)": lambda: cache.get_full_resid_decomposition(
                expand_neurons=False
            ),
            "logit_attrs (all decoder components, every position)": lambda: cache.logit_attrs(
                full[:, :, :-1], toks, pos_slice=(0, toks.shape[1])
            ),
        }
        rows = []
        for name, fn in helpers.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t = median_seconds(fn, args.repeats, args.device)
            outb = _nbytes(fn())
            peak = (torch.cuda.max_memory_allocated() - base) if args.device == "cuda" else None
            rows.append((name, t, outb, peak))
    t_tr = median_seconds(lambda: model.transcribe(audio), max(1, args.repeats - 1), args.device)
    t_dla = median_seconds(lambda: dla_transcript(model, audio, tokens=tokens), max(1, args.repeats - 1), args.device)

    mib = 2**20
    print(
        f"plain run_with_cache (reference): {t_cache * 1e3:.0f} ms, {cache_bytes / mib:.0f} MiB in {len(cache)} hooks; "
        f"estimate {est.total_bytes / mib:.0f} MiB (estimate / measured = {est.total_bytes / cache_bytes:.3f})"
    )
    print(
        f"caching hook_result too would hold {est_res.total_bytes / mib:.0f} MiB "
        f"({est_res.total_bytes / cache_bytes:.2f}x the plain cache); head results here are computed on demand"
    )
    print(
        f"{'helper':55s} {'time':>9s} {'/ cache':>8s} {'output':>9s} {'/ cache':>8s}"
        + ("  peak extra" if args.device == "cuda" else "")
    )
    for name, t, outb, peak in rows:
        extra = f"  {peak / mib:.0f} MiB" if peak is not None else ""
        print(f"{name:55s} {t * 1e3:7.0f}ms {t / t_cache:8.2f} {outb / mib:7.1f}MiB {outb / cache_bytes:8.3f}{extra}")
    print(f"DLA of every transcript step: {t_dla:.2f} s vs transcribe {t_tr:.2f} s (ratio {t_dla / t_tr:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
