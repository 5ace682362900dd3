"""Encoder lens over all layers (one batch) vs one ordinary transcription per layer.

Reference, measured in the same run: ``n_layers x`` the time of ``model.transcribe(audio)``.
Also timed: the naive encoder lens (each layer decoded on its own, batch 1). The issue's target
is ``encoder lens / reference <= 1.5``.

Uses the real whisper tiny.en / base and espeak-ng speech when they load; otherwise a random
model with tiny.en's shape on noise (decoding then runs to the length cap, so the absolute
numbers differ, the ratio is still meaningful).

    python benchmarks/bench_lens.py [--model whisper-tiny.en] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _models import model_and_speech
from _timing import median_seconds


def _load(name: str, device: str):
    model, clips, what = model_and_speech(name, 1, device)
    return model, clips[0], what


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="cap every decode (default: the lens's own cap)")
    args = ap.parse_args(argv)

    from hooked_asr.lens import encoder_lens, encoder_lens_states

    model, audio, what = _load(args.model, args.device)
    if what.startswith("random") and args.max_new_tokens is None:
        args.max_new_tokens = 48  # a random model never stops: cap every decode alike
    n_layers = model.n_layers["encoder"]
    lang = "en" if model.cfg.is_multilingual else None
    kw = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    final = model.transcribe(audio, language=lang, **kw)
    cap = args.max_new_tokens or max(2 * len(final.tokens) + 10, 32)

    with torch.no_grad():
        t_one = median_seconds(lambda: model.transcribe(audio, language=lang, **kw), args.repeats, args.device)
        t_lens = median_seconds(
            lambda: encoder_lens(model, audio, language=lang, final=final, max_new_tokens=cap),
            args.repeats,
            args.device,
        )
        t_lens_full = median_seconds(
            lambda: encoder_lens(model, audio, language=lang, max_new_tokens=cap), args.repeats, args.device
        )

        def naive() -> None:
            feats = model.prepare_features(audio)
            main_key = next(iter(feats))
            rest = {k: v for k, v in feats.items() if k != main_key}
            for l in range(n_layers):
                states = encoder_lens_states(model, feats, [l])
                model.generate(
                    feats[main_key],
                    final.prompt,
                    max_new_tokens=cap,
                    encoder_hidden_states=states,
                    **model.generation_kwargs(),
                    **rest,
                )

        t_naive = median_seconds(naive, args.repeats, args.device)

    res = encoder_lens(model, audio, language=lang, final=final, max_new_tokens=cap)
    stops = set(model.stop_token_ids())
    longest = max(len(l.tokens) + (1 if l.finished else 0) for l in res.layers)
    ref = n_layers * t_one
    print(
        f"model: {what}; device {args.device}; {n_layers} encoder layers; final transcript "
        f"{len(final.tokens)} tokens; longest layer transcript {longest} steps (cap {cap}); stops {sorted(stops)[:3]}"
    )
    print(f"one ordinary transcription:                 {t_one * 1e3:9.1f} ms")
    print(f"reference = {n_layers} x ordinary transcription:      {ref * 1e3:9.1f} ms")
    print(
        f"encoder lens, all layers batched:           {t_lens * 1e3:9.1f} ms   ratio {t_lens / ref:.2f} (target <= 1.5)"
    )
    print(f"  ... including the final transcription:    {t_lens_full * 1e3:9.1f} ms   ratio {t_lens_full / ref:.2f}")
    print(f"encoder lens, one layer at a time:          {t_naive * 1e3:9.1f} ms   ratio {t_naive / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
