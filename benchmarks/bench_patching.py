"""Full head-level sweep on whisper tiny: batched vs one at a time, and attribution patching vs the sweep.

Every head of encoder self-attention, decoder self-attention and decoder cross-attention
(4 layers x 6 heads x 3 = 72 on tiny) is patched from an RMS-matched white-noise reference
(alpha = 1). Reported as ratios measured in the same run:

* teacher-forced sweep (metric: mean log-prob of the clean transcript): batch of
  ``--batch-size`` components per forward vs one component per forward;
* generation sweep (metric: transcript changed): batched greedy decoding vs one at a time;
* attribution patching (one forward + backward for all 72 heads) vs the batched
  teacher-forced sweep, with the Spearman rank correlation between the two.

    python benchmarks/bench_patching.py [--items 1] [--batch-size 24] [--out results/bench_patching.json]

Uses the real tiny.en when ``hooked_asr.load_model`` can load it, else a random model of
the same shape (timings depend only on the shape).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def load_tiny():
    try:
        from hooked_asr.loading.registry import load_model

        return load_model("whisper-tiny.en"), "whisper-tiny.en"
    except Exception as e:  # the loader may not be installed yet: the shape is what matters for timing
        from transformers import WhisperConfig, WhisperForConditionalGeneration

        from hooked_asr import HookedWhisper

        torch.manual_seed(0)
        cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=4, decoder_layers=4,
                            encoder_attention_heads=6, decoder_attention_heads=6, d_model=384,
                            encoder_ffn_dim=1536, decoder_ffn_dim=1536)
        print(f"(real tiny.en unavailable: {type(e).__name__}: {str(e)[:120]}; using a random tiny-shaped model)")
        return HookedWhisper.from_hf(WhisperForConditionalGeneration(cfg).eval()), "random tiny-shaped"


def make_audio(n: int) -> list[np.ndarray]:
    sentences = ["the quick brown fox jumps over the lazy dog", "please call stella and ask her to bring these things"]
    try:
        from hooked_asr.datasets.espeak import synthesize

        return [synthesize(sentences[i % 2]) for i in range(n)]
    except Exception:
        rng = np.random.default_rng(0)
        t = np.arange(4 * 16000) / 16000
        return [(0.1 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
                for i in range(n)]


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
    audio = make_audio(args.items)
    items = [SweepItem(f"item{i}", a) for i, a in enumerate(audio)]
    print(f"model: {which}; {len(comps)} heads; {len(items)} item(s); torch threads {torch.get_num_threads()}")
    res: dict = {"model": which, "n_heads": len(comps), "n_items": len(items), "batch_size": args.batch_size}

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    kw = dict(reference="noise", mode="teacher_forced", metrics=["logprob"], max_new_tokens=args.max_new_tokens,
              progress=False)
    sweep(model, items[:1], comps[:2], "interpolate", batch_size=2, **kw)  # warm-up
    batched, tb = timed(lambda: sweep(model, items, comps, "interpolate", batch_size=args.batch_size, **kw))
    single, ts = timed(lambda: sweep(model, items, comps, "interpolate", batch_size=1, **kw))
    diff = float(np.abs(batched.table["value"].to_numpy() - single.table["value"].to_numpy()).max())
    res["teacher_forced"] = {"batched_s": tb, "one_at_a_time_s": ts, "speedup": ts / tb, "max_abs_diff": diff}
    print(f"teacher-forced sweep: batched {tb:.1f} s, one at a time {ts:.1f} s -> speedup x{ts / tb:.2f} "
          f"(values agree to {diff:.1e})")
    for stack in ("encoder", "decoder"):
        sub = [c for c in comps if c.stack == stack]
        _, tbs = timed(lambda: sweep(model, items, sub, "interpolate", batch_size=args.batch_size, **kw))
        _, tss = timed(lambda: sweep(model, items, sub, "interpolate", batch_size=1, **kw))
        res["teacher_forced"][f"{stack}_speedup"] = tss / tbs
        print(f"  {stack} heads only ({len(sub)}): batched {tbs:.1f} s, one at a time {tss:.1f} s -> x{tss / tbs:.2f}")

    if not args.skip_generate:
        gkw = dict(reference="noise", metrics=["changed"], missing="keep", max_new_tokens=args.max_new_tokens,
                   progress=False)
        gb, tgb = timed(lambda: sweep(model, items, comps, "interpolate", batch_size=args.batch_size, **gkw))
        gs, tgs = timed(lambda: sweep(model, items, comps, "interpolate", batch_size=1, **gkw))
        agree = float((gb.table["value"].to_numpy() == gs.table["value"].to_numpy()).mean())
        res["generate"] = {"batched_s": tgb, "one_at_a_time_s": tgs, "speedup": tgs / tgb, "agreement": agree}
        print(f"generation sweep: batched {tgb:.1f} s, one at a time {tgs:.1f} s -> speedup x{tgs / tgb:.2f} "
              f"(same 'changed' verdict on {agree:.0%} of rows)")

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
