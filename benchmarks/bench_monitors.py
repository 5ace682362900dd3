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

import numpy as np
import torch
from _timing import median_seconds

SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "The quick brown fox jumps over the lazy dog.",
    "We will meet at the station at half past nine tomorrow morning.",
    "She sells sea shells by the sea shore.",
    "A cup of hot tea is the best way to start a cold day.",
    "The museum opens at ten and closes at six on weekdays.",
    "He forgot his umbrella on the train again.",
    "Turn left after the bridge and follow the river to the old mill.",
]


def _load(name: str, device: str, batch: int):
    try:
        import hooked_asr
        from hooked_asr.datasets.espeak import synthesize

        model = hooked_asr.load_model(name).to(device)
        clips = [synthesize(SENTENCES[i % len(SENTENCES)], voice="en-us") for i in range(batch)]
        return model, clips, f"{name}, espeak-ng speech"
    except Exception as err:  # noqa: BLE001 - any missing piece falls back
        print(f"[{name} or espeak-ng unavailable ({type(err).__name__}: {err}); using a random tiny.en-shaped model]")
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from hooked_asr import HookedWhisper

    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=4, decoder_layers=4, d_model=384,
                        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
                        decoder_ffn_dim=1536, max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(0)
    model = HookedWhisper.from_hf(WhisperForConditionalGeneration(cfg).eval()).to(device)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16000 * 4)).astype(np.float32) for _ in range(batch)]
    return model, clips, "random tiny.en-shaped model, noise"


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
        t_both = median_seconds(lambda: transcribe_with_monitors(model, clips, [enc, dec], **kw), args.repeats, args.device)
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
