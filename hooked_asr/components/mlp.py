"""MLPs: Whisper's GELU MLP and Qwen2's gated SiLU MLP."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float

from hooked_asr.components.products import product
from hooked_asr.hooks import HookPoint


class MLP(nn.Module):
    """``out = gelu(x W_in + b_in) W_out + b_out`` (exact, erf-based GELU as in Whisper)."""

    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        pre = self.hook_pre(product(x, self.W_in, self.b_in))
        if torch.is_grad_enabled() or self.hook_pre.is_live():
            post = self.hook_post(F.gelu(pre))
        else:
            # Nothing holds pre (no hook saw it, no backward needs it): GELU in place saves a
            # [batch, pos, d_mlp] allocation (above 32 MiB, i.e. batch >= 4 on tiny, each one is a
            # fresh mmap whose pages fault in one by one). Same kernel, same values.
            post = self.hook_post(torch.ops.aten.gelu_(pre))
        return product(post, self.W_out, self.b_out)


class GatedMLP(nn.Module):
    """``out = (silu(x W_gate) * (x W_in)) W_out``, no biases (Qwen2)."""

    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.W_gate = nn.Parameter(torch.empty(d_model, d_mlp))
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]  x W_gate
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]  x W_in
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        pre = self.hook_pre(product(x, self.W_gate))
        pre_linear = self.hook_pre_linear(product(x, self.W_in))
        post = self.hook_post(F.silu(pre) * pre_linear)
        return product(post, self.W_out)


__all__ = ["MLP", "GatedMLP"]
