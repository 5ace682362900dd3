"""HookedWhisper vs Hugging Face Whisper on CPU: time ratios measured in the same run.

Targets (issue 2): forward <= 1.10x HF with no hooks attached; greedy transcription
<= 1.2x HF ``generate``; ``run_with_cache`` of one hook stores only that hook.
Random weights at the real tiny and base shapes (speed does not depend on the values).

    python benchmarks/bench_whisper.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration
from transformers.generation.utils import GenerationMixin

from hooked_asr import HookedWhisper

SHAPES = {
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
                 encoder_ffn_dim=1536, decoder_ffn_dim=1536),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                 encoder_ffn_dim=2048, decoder_ffn_dim=2048),
}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(shape: str, repeats: int, attn: str, n_tokens: int = 40) -> dict:
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(WhisperConfig(vocab_size=51865, **SHAPES[shape], attn_implementation=attn)).eval()
    model = HookedWhisper.from_hf(hf)
    # 10 s of audio: the features are padded to 30 s as always.
    feats = torch.randn(1, 80, 3000)
    feats[..., 1000:] = -0.5
    tokens = torch.randint(0, 50000, (1, 24))
    prompt = [50258, 50259, 50359, 50363]
    no_eos = [hf.config.eos_token_id]  # both decoders then produce exactly n_tokens
    rows = {}
    with torch.inference_mode():
        rows["encoder forward"] = (median_time(lambda: model.encode(feats), repeats),
                                   median_time(lambda: hf.model.encoder(feats), repeats))
        rows["teacher-forced forward"] = (
            median_time(lambda: model(input_features=feats, decoder_input_ids=tokens), repeats),
            median_time(lambda: hf(input_features=feats, decoder_input_ids=tokens), repeats))
        ours = lambda: model.generate(feats, prompt, max_new_tokens=n_tokens, suppress_tokens=no_eos, begin_suppress_tokens=[])  # noqa: E731
        theirs = lambda: GenerationMixin.generate(  # noqa: E731
            hf, input_features=feats, decoder_input_ids=torch.tensor([prompt]), max_new_tokens=n_tokens,
            min_new_tokens=n_tokens, do_sample=False, num_beams=1, suppress_tokens=no_eos)
        rows[f"greedy transcription ({n_tokens} tokens)"] = (median_time(ours, repeats), median_time(theirs, repeats))
        name = "decoder.blocks.0.hook_resid_post"
        _, one = model.run_with_cache(input_features=feats, decoder_input_ids=tokens, names_filter=name)
        _, everything = model.run_with_cache(input_features=feats, decoder_input_ids=tokens)
    nbytes = lambda c: sum(t.numel() * t.element_size() for t in c.values())  # noqa: E731
    return {
        "shape": shape,
        "hf_attention": attn,
        "timings_s": {k: {"hooked": a, "hf": b, "ratio": a / b} for k, (a, b) in rows.items()},
        "run_with_cache": {"one_hook_names": list(one), "one_hook_bytes": nbytes(one),
                           "that_tensor_bytes": one[name].numel() * 4, "all_hooks_bytes": nbytes(everything),
                           "n_hooks_all": len(everything)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--hf-attention", nargs="+", default=["sdpa", "eager"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for shape in args.shapes:
        for attn in args.hf_attention:
            r = bench(shape, args.repeats, attn)
            results.append(r)
            print(f"\n== whisper-{shape} shape, HF attention={attn} (median of {args.repeats}) ==")
            for k, v in r["timings_s"].items():
                print(f"  {k:<36} hooked {v['hooked'] * 1e3:8.1f} ms   HF {v['hf'] * 1e3:8.1f} ms   ratio {v['ratio']:.2f}x")
            c = r["run_with_cache"]
            print(f"  run_with_cache(one hook): {c['one_hook_bytes']} bytes = that tensor's {c['that_tensor_bytes']} "
                  f"bytes (all {c['n_hooks_all']} hooks: {c['all_hooks_bytes'] / 2**20:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
