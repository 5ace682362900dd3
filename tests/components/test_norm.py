"""hooked_asr/components/norm.py against Hugging Face: LayerNorm as torch's (Whisper's) with and
without the scale hooked, RMSNorm as Qwen2's Qwen2RMSNorm, and hook_scale the statistic it names."""

from __future__ import annotations

import torch
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from hooked_asr.components.norm import LayerNorm, RMSNorm


def _randomised(norm: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return norm


def test_layer_norm_equals_torch_fused_or_with_the_scale_hooked():
    ln = _randomised(LayerNorm(16, eps=1e-5))
    ref = torch.nn.LayerNorm(16, eps=1e-5)
    ref.weight.data, ref.bias.data = ln.w.data.clone(), ln.b.data.clone()
    x = 3 * torch.randn(2, 7, 16) + 1
    torch.testing.assert_close(ln(x), ref(x), rtol=0, atol=1e-6)
    seen = {}
    ln.hook_scale.add_hook(lambda t, hook: seen.setdefault("scale", t))
    try:
        torch.testing.assert_close(ln(x), ref(x), rtol=0, atol=1e-5)  # the explicit form, same numbers
    finally:
        ln.hook_scale.remove_hooks()
    torch.testing.assert_close(seen["scale"], (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())


def test_rms_norm_equals_qwen2_rms_norm_in_half_precision_too():
    rms = _randomised(RMSNorm(16, eps=1e-6))
    ref = Qwen2RMSNorm(16, eps=1e-6)
    ref.weight.data = rms.w.data.clone()
    x = 3 * torch.randn(2, 7, 16)
    torch.testing.assert_close(rms(x), ref(x), rtol=0, atol=1e-6)
    rms16, ref16 = rms.to(torch.bfloat16), ref.to(torch.bfloat16)
    torch.testing.assert_close(rms16(x.bfloat16()), ref16(x.bfloat16()), rtol=0, atol=0)
