"""Pooling rules: one vector per clip (or every frame) out of a hook's activation.

Whisper pads every clip to 30 s (480000 samples at 16 kHz); the encoder's 1500 frames
are 20 ms (320 samples) each, so only the first ``ceil(n_samples / 320)`` frames hold
audio. A probe that averages over all 1500 frames mostly reads the padding, so encoder
pooling averages over the audio frames only:

    mean:  a = (1 / n) * sum_{t < n} x[t],   n = audio_frames(n_samples, T)

Decoder pooling reads the token sequence the model produced (prompt + transcript + end
of text): ``final`` keeps the last position (the end-of-text token when the transcript
finished), ``mean`` averages over all positions, ``none`` keeps every position.
``none`` on an encoder hook keeps every audio frame (frame-level data for SAEs).
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float

from hooked_asr.audio import SAMPLES_PER_ENCODER_FRAME as SAMPLES_PER_FRAME
from hooked_asr.audio import audio_frames, window_samples

Pooling = Literal["mean", "final", "none"]
POOLINGS = ("mean", "final", "none")


def normalise_pooling(pooling: str, hook_name: str) -> str:
    """Validate a pooling rule for a hook; ``all`` is accepted as a synonym of ``none``."""
    p = "none" if pooling == "all" else pooling
    if p not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} for {hook_name!r}; use one of {POOLINGS} (or 'all')")
    if p == "final" and hook_name.startswith("encoder."):
        raise ValueError(
            f"pooling 'final' is for decoder hooks; {hook_name!r} is an encoder hook: use 'mean' or 'none'"
        )
    return p


def default_pooling(hook_name: str) -> str:
    """Encoder: mean over audio frames. Decoder: the final token."""
    return "mean" if hook_name.startswith("encoder.") else "final"


def flatten_positions(x: torch.Tensor, hook_name: str) -> Float[torch.Tensor, "batch pos d"]:
    """``[batch, pos, ...]`` -> ``[batch, pos, d]`` (per-head hooks are concatenated over heads)."""
    if x.ndim < 3:
        raise ValueError(f"{hook_name!r} has shape {tuple(x.shape)}; pooling needs [batch, pos, ...]")
    if "pattern" in hook_name or "attn_scores" in hook_name or hook_name.endswith("hook_mel"):
        raise ValueError(
            f"{hook_name!r} is not laid out [batch, pos, ...] (patterns are [batch, head, q, k], mel is "
            "[batch, n_mels, frames]); store a residual, attention-output, MLP or per-head z/q/k/v hook"
        )
    return x.reshape(x.shape[0], x.shape[1], -1)


def pool(
    x: Float[torch.Tensor, "batch pos d"], lengths: torch.Tensor | list[int], pooling: str
) -> list[Float[torch.Tensor, "n d"]]:
    """Pool each row over its first ``lengths[b]`` positions.

    Returns one tensor per row: ``[1, d]`` for ``mean`` / ``final``, ``[lengths[b], d]``
    for ``none``. Positions at or beyond ``lengths[b]`` (padding) never contribute.
    """
    out = []
    for b, n in enumerate([int(v) for v in lengths]):
        if not 1 <= n <= x.shape[1]:
            raise ValueError(f"row {b}: length {n} is outside 1..{x.shape[1]}")
        rows = x[b, :n]
        if pooling == "mean":
            out.append(rows.double().mean(0, keepdim=True).to(x.dtype))
        elif pooling == "final":
            out.append(rows[-1:])
        elif pooling == "none":
            out.append(rows)
        else:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
    return out


__all__ = [
    "POOLINGS",
    "Pooling",
    "default_pooling",
    "flatten_positions",
    "normalise_pooling",
    "pool",
]
