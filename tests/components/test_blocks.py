"""hooked_asr/components/blocks.py: the block is its equations, and a run that enters at
``after_attention`` (how models/runner.py resumes at ``attn.hook_z``) gives the same output and
fires only the hooks after the attention."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.components.blocks import Block


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    b = Block(32, 4, 64, causal=True, cross_attention=True)
    with torch.no_grad():
        for p in b.parameters():
            p.copy_(0.2 * torch.randn(p.shape))
    return b


def _names(block):
    for name, m in block.named_modules():
        if hasattr(m, "is_live"):
            m.name = name
    return [m for m in block.modules() if hasattr(m, "is_live")]


@torch.no_grad()
def test_block_is_its_equations(block):
    x, enc = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    out, present = block(x, encoder_out=enc)
    a, _ = block.attn(block.ln1(x))
    mid = x + a
    c, _ = block.cross_attn(block.ln_cross(mid), kv_input=enc)
    mid_cross = mid + c
    torch.testing.assert_close(out, mid_cross + block.mlp(block.ln2(mid_cross)), rtol=0, atol=1e-6)
    assert set(present) == {"self", "cross"}


@torch.no_grad()
def test_entering_after_the_attention_gives_the_same_output_and_skips_the_hooks_before(block):
    x, enc = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    points = _names(block)
    fired, z = [], {}
    for hp in points:
        hp.add_hook(lambda t, hook: fired.append(hook.name))
    block.attn.hook_z.add_hook(lambda t, hook: z.setdefault("z", t.clone()))
    try:
        full, _ = block(x, encoder_out=enc)
        first = list(fired)
        fired.clear()
        resumed, present = block.after_attention(x, block.attn.from_z(z["z"]), enc)
    finally:
        for hp in points:
            hp.remove_hooks()
    torch.testing.assert_close(resumed, full, rtol=0, atol=1e-6)
    assert set(present) == {"cross"}
    skipped = first[: first.index("attn.hook_z")]
    assert "hook_resid_pre" in skipped and "attn.hook_pattern" in skipped
    assert fired == first[first.index("attn.hook_z") :]
