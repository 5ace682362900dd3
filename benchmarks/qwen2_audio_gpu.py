"""HookedQwen2Audio at the real 7B shape on a GPU: memory and greedy tokens/s, against HF in the same run.

Random weights at Qwen2-Audio-7B's shapes (speed and memory do not depend on the values),
bf16 by default. Reports the model's weight memory, the peak extra memory of a greedy
generation over a 30 s clip (750 audio tokens + the chat prompt), tokens/s for ours and for
HF ``generate`` and their ratio, and whether both produced the same tokens.

    python benchmarks/qwen2_audio_gpu.py [--shape real|tiny] [--device cuda] [--dtype bfloat16]
        [--new-tokens 64] [--repeats 3] [--json out.json]

``--shape tiny --device cpu`` runs the same code in seconds, to check the script itself.
Needs about 2 x 17 GB of GPU memory for ``real`` (the HF model and ours side by side).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration
from transformers.generation.utils import GenerationMixin

from hooked_asr import HookedQwen2Audio

REAL = dict(
    audio=dict(
        d_model=1280,
        encoder_layers=32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        num_mel_bins=128,
        max_source_positions=1500,
    ),
    text=dict(
        vocab_size=156032,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
    ),
)
TINY = dict(
    audio=dict(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        num_mel_bins=128,
        max_source_positions=1500,
    ),
    text=dict(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
    ),
)
AUDIO_ID = 151646 % 1000  # a placeholder id inside both vocabularies


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["real", "tiny"], default="real")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    spec = REAL if args.shape == "real" else TINY
    cuda = args.device.startswith("cuda")

    cfg = Qwen2AudioConfig(
        audio_config=dict(spec["audio"], model_type="qwen2_audio_encoder"),
        text_config=dict(
            spec["text"], model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
        ),
        audio_token_index=AUDIO_ID,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        hf = Qwen2AudioForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(prev)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
    t = time.perf_counter()
    model = HookedQwen2Audio.from_hf(hf, dtype=dtype, device=args.device)
    convert_s = time.perf_counter() - t
    allocated_gb = (torch.cuda.memory_allocated() - base) / 1e9 if cuda else None
    weight_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    n_params = sum(p.numel() for p in model.parameters())

    # A 30 s clip: 3000 mel frames -> 750 audio tokens after pooling; a short text prompt around them.
    feats = torch.randn(1, 128, 3000, device=args.device, dtype=dtype)
    n_audio = 750
    prompt = [10, 11, 12] + [AUDIO_ID] * n_audio + [13, 14, 15]
    ids = torch.tensor([prompt], device=args.device)
    mask = torch.ones(1, 3000, dtype=torch.long, device=args.device)
    n = args.new_tokens
    rows: dict[str, object] = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": args.dtype,
        "params": n_params,
        "weights_gb": round(weight_gb, 2),
        "ours_allocated_gb": allocated_gb and round(allocated_gb, 2),
        "convert_s": round(convert_s, 1),
        "prompt_tokens": len(prompt),
        "new_tokens": n,
    }

    with torch.inference_mode():
        ours = lambda: model.generate(feats, prompt, max_new_tokens=n, eos_token_id=-1, feature_attention_mask=mask)  # noqa: E731
        theirs = lambda: GenerationMixin.generate(  # noqa: E731
            hf,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            input_features=feats,
            feature_attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            num_beams=1,
            eos_token_id=None,
            pad_token_id=0,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        t_ours, out = timed(ours, args.device, args.repeats)
        if cuda:
            rows["generate_peak_extra_gb"] = round((torch.cuda.max_memory_allocated() - start) / 1e9, 2)
        t_hf, ref = timed(theirs, args.device, args.repeats)
    rows["ours_tokens_per_s"] = round(n / t_ours, 2)
    rows["hf_tokens_per_s"] = round(n / t_hf, 2)
    rows["time_ratio_ours_over_hf"] = round(t_ours / t_hf, 3)
    rows["same_tokens_as_hf"] = out.sequences[0].tolist() == ref[0].tolist()
    for k, v in rows.items():
        print(f"{k:>26}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
