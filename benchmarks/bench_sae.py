"""SAE training throughput (frames per second) on CPU, with two references from the same run.

* ``dense AE step``: the same shapes, Adam and batch, without sparsity, dead-feature
  bookkeeping or decoder renormalisation: the ratio is what the SAE machinery costs.
* ``encoder frames/s``: how fast a Whisper encoder (random weights at the tiny or base
  shape, 10 s of speech per 30 s window, so 500 useful frames per forward) produces
  frames. ``SAE / encoder`` > 1 means activation generation, not SAE training, bounds a
  streaming run.

    python benchmarks/bench_sae.py [--shape tiny] [--expansion 8] [--batch 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hooked_asr.sae import SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig

SHAPES = {"tiny": (384, 4, 6, 1536), "base": (512, 6, 8, 2048)}  # d_model, layers, heads, d_mlp


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sae_frames_per_s(d: int, d_sae: int, arch: str, batch: int, steps: int) -> float:
    frames = torch.randn(batch * 8, d) * 4
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=d_sae, architecture=arch, k=32, dead_after_frames=batch * 4))
    trainer = SAETrainer(
        sae, TrainConfig(total_frames=10**9, batch_size=batch, progress=False, buffer_frames=batch * 4)
    )
    src = TensorFrameSource(frames, chunk_size=batch)
    it = [iter(src)]

    def run():
        for _ in range(steps):
            trainer.step(trainer._next_batch(it, src))

    return steps * batch / median_time(run, 3)


def dense_frames_per_s(d: int, d_sae: int, batch: int, steps: int) -> float:
    w_enc = torch.nn.Parameter(torch.randn(d, d_sae) / d**0.5)
    w_dec = torch.nn.Parameter(torch.randn(d_sae, d) / d_sae**0.5)
    opt = torch.optim.Adam([w_enc, w_dec], lr=1e-3)
    x = torch.randn(batch, d)

    def run():
        for _ in range(steps):
            loss = ((torch.relu(x @ w_enc) @ w_dec - x) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    return steps * batch / median_time(run, 3)


def encoder_frames_per_s(shape: str) -> float:
    from hooked_asr import DecoderConfig, EncoderConfig, HookedWhisper, ModelConfig

    d, layers, heads, mlp = SHAPES[shape]
    cfg = ModelConfig(
        encoder=EncoderConfig(d_model=d, n_layers=layers, n_heads=heads, d_mlp=mlp),
        decoder=DecoderConfig(d_model=d, n_layers=1, n_heads=heads, d_mlp=mlp, d_vocab=100),
    )
    model = HookedWhisper(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    feats = torch.randn(1, 80, 3000)
    with torch.inference_mode():
        return 500 / median_time(lambda: model.encode(feats), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    d = SHAPES[args.shape][0]
    d_sae = d * args.expansion
    dense = dense_frames_per_s(d, d_sae, args.batch, args.steps)
    enc = encoder_frames_per_s(args.shape)
    rows = {"dense AE step": dense, "encoder (10 s speech / window)": enc}
    for arch in ("topk", "relu"):
        rows[f"SAE {arch} step"] = sae_frames_per_s(d, d_sae, arch, args.batch, args.steps)
    print(f"d_in={d} d_sae={d_sae} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"{'':34} {'frames/s':>10} {'/ dense':>8} {'/ encoder':>10}")
    for name, v in rows.items():
        print(f"{name:34} {v:10.0f} {v / dense:8.2f} {v / enc:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"d_in": d, "d_sae": d_sae, "batch": args.batch, "frames_per_s": rows}, f, indent=2)


if __name__ == "__main__":
    main()
