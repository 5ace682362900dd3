"""Qwen2-Audio's multimodal projector: audio width -> language-model width."""

from __future__ import annotations

import torch
import torch.nn as nn
from jaxtyping import Float, Int

from hooked_asr.hooks import HookPoint


class AudioProjector(nn.Module):
    """Qwen2-Audio's multimodal projector: ``out = x W + b``, audio width -> language-model width."""

    def __init__(self, d_audio: int, d_model: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_audio, d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_out = HookPoint()  # [batch, pooled, d_model]

    def forward(self, x: Float[torch.Tensor, "batch pooled d_audio"]) -> Float[torch.Tensor, "batch pooled d_model"]:
        return self.hook_out(x @ self.W + self.b)


def audio_token_counts(
    feature_attention_mask: Int[torch.Tensor, "batch mel_frames"],
) -> tuple[Int[torch.Tensor, " batch"], Int[torch.Tensor, " batch"]]:
    """``(frames after the stride-2 conv, audio tokens after pooling)`` for ``n`` real mel frames:
    ``c = (n - 1) // 2 + 1`` and ``t = (c - 2) // 2 + 1`` (Hugging Face's formulas)."""
    n = feature_attention_mask.sum(-1).long()
    conv = (n - 1) // 2 + 1
    return conv, (conv - 2) // 2 + 1


__all__ = ["AudioProjector", "audio_token_counts"]
