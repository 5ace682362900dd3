"""Overhead of probe monitors: monitored / unmonitored ``transcribe`` on the same clips.

Reference, measured in the same run: ``model.transcribe(clips)``. Monitored runs:

* encoder only: a probe on ``encoder.blocks.{L-1}.hook_resid_post`` (mean over audio frames),
  read during transcription's own encoder pass;
* encoder + decoder: plus a probe on the decoder's last residual at end-of-text, which costs
  one extra teacher-forced decoder pass over prompt + transcript + eos.

Probe weights are random (the cost does not depend on them). Uses the real whisper tiny.en and
espeak-ng speech; falls back to a random tiny.en-shaped model on noise when those are missing.

    python benchmarks/bench_monitors.py [--model whisper-tiny.en] [--batch 4] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from _models import model_and_speech
from _timing import median_seconds


def _load(name: str, device: str, batch: int):
    return model_and_speech(name, batch, device)


def main(argv: list[str] | None = None) -> dict[str, float]:
    from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
    from hooked_asr.probing import LinearProbe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    model, clips, what = _load(args.model, args.device, args.batch)
    L_enc, L_dec = model.cfg.encoder.n_layers, model.cfg.decoder.n_layers
    d = model.cfg.encoder.d_model
    torch.manual_seed(0)
    probe = LinearProbe(d, "classification", [0, 1]).to(args.device)
    with torch.no_grad():
        probe.linear.weight.normal_(0, 0.05)
    enc = ProbeMonitor("speech", probe, f"encoder.blocks.{L_enc - 1}.hook_resid_post")
    dec = ProbeMonitor("hallucination", probe, f"decoder.blocks.{L_dec - 1}.hook_resid_post")
    kw = {"max_new_tokens": args.max_new_tokens}
    if getattr(model.cfg, "is_multilingual", False):
        kw["language"] = "en"

    with torch.no_grad():
        t_ref = median_seconds(lambda: model.transcribe(clips, **kw), args.repeats, args.device)
        t_enc = median_seconds(lambda: transcribe_with_monitors(model, clips, [enc], **kw), args.repeats, args.device)
        t_both = median_seconds(
            lambda: transcribe_with_monitors(model, clips, [enc, dec], **kw), args.repeats, args.device
        )
    out = transcribe_with_monitors(model, clips, [enc, dec], **kw)
    n_tok = sum(len(r.tokens) for r in out)
    print(f"{what}; batch {len(clips)}, {n_tok} tokens in all, device {args.device}, median of {args.repeats}")
    print(f"  transcribe (reference)        {t_ref * 1000:8.1f} ms")
    print(f"  + encoder monitor             {t_enc * 1000:8.1f} ms   ratio {t_enc / t_ref:5.2f}")
    print(f"  + encoder + decoder monitors  {t_both * 1000:8.1f} ms   ratio {t_both / t_ref:5.2f}")
    print(f"  example scores: {out[0].extra['monitors']}")
    return {"reference_s": t_ref, "encoder_ratio": t_enc / t_ref, "both_ratio": t_both / t_ref}


if __name__ == "__main__":
    main()
