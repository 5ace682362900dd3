"""Checks that a checkpoint's weights are what its config says, before any model is built.

One place for them, shared by every loader (Hugging Face folders, CTranslate2 files, the
converted cache) and callable by the model constructors:

* :func:`check_weight_values`: every tensor is floating point and finite. An integer
  tensor would be cast silently (a quantised or corrupt file); one NaN poisons every
  activation downstream.
* :func:`check_whisper_heads`: each stack's head count divides ``d_model``, and a
  checkpoint with a released Whisper's width and vocabulary has ``d_head = 64`` (every
  OpenAI Whisper, tiny to large-v3 and turbo, has 64-wide heads; q/k/v weights are
  ``[d_model, d_model]`` whatever the head count, so a wrong count loads without a shape
  error and computes garbage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# Released Whisper widths (tiny, base, small, medium, large) and vocabularies (.en, multilingual, large-v3).
WHISPER_WIDTHS = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}
WHISPER_VOCABS = {51864, 51865, 51866}
WHISPER_D_HEAD = 64


class WeightValueError(ValueError):
    """A tensor that is not floating point or holds NaN/inf."""


def check_weight_values(state_dict: Mapping[str, torch.Tensor], where: str, chunk: int = 1 << 24) -> None:
    """Raise :class:`WeightValueError` naming the first non-float or non-finite tensor of ``state_dict``.

    One reduction per tensor: under IEEE arithmetic a sum is finite only if every term is (a NaN
    or an infinity propagates through every addition), so a finite ``sum(t)`` proves ``t`` finite
    without the elementwise ``isfinite`` pass (about 30x slower). A non-finite sum is either a bad
    value or an overflow of large finite values; the exact elementwise check then decides."""
    for name, t in state_dict.items():
        if not torch.is_floating_point(t):
            raise WeightValueError(
                f"{where}: weight {name!r} has dtype {t.dtype}; a Whisper checkpoint holds floating-point weights "
                "(is it quantised, or corrupt?). Re-export it in float16/float32"
            )
        if t.numel() == 0 or torch.isfinite(t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)):
            continue
        flat = t.reshape(-1)
        for i in range(0, flat.numel(), chunk):  # chunked: no full-size boolean copy of a large tensor
            part = flat[i : i + chunk]
            if not torch.isfinite(part).all():
                bad = int((~torch.isfinite(flat)).sum())
                raise WeightValueError(
                    f"{where}: weight {name!r} holds {bad} NaN/inf values of {flat.numel()}; the checkpoint is "
                    "corrupt (or was saved after training diverged). Re-download or re-export it"
                )


def check_whisper_heads(hf_config: Any, where: str) -> None:
    """Raise ``ValueError`` when a Whisper config's head counts contradict its width (see module docstring)."""
    d = int(hf_config.d_model)
    official = d in WHISPER_WIDTHS and int(hf_config.vocab_size) in WHISPER_VOCABS
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        n = int(getattr(hf_config, key))
        if n <= 0 or d % n:
            raise ValueError(f"{where}: {key}={n} does not divide d_model={d}; fix the head count in config.json")
        if official and d // n != WHISPER_D_HEAD:
            raise ValueError(
                f"{where}: {key}={n} gives d_head={d // n}, but weights of width d_model={d} with a Whisper "
                f"vocabulary are a released Whisper, whose heads are {WHISPER_D_HEAD} wide: set {key}="
                f"{d // WHISPER_D_HEAD} in config.json"
            )


__all__ = ["WeightValueError", "check_weight_values", "check_whisper_heads", "WHISPER_D_HEAD"]
