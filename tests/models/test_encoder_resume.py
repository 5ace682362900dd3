"""``model.encode(resid, start_at_layer=l, attn_z=z)``: resuming inside encoder block ``l`` at
``attn.hook_z`` (block ``l``'s attention not recomputed) gives what the full pass gives, with the
hooks from ``hook_z`` on firing (so head patches apply) and those before it not."""

from __future__ import annotations

import pytest
import torch


def _feats(m, batch=2):
    return torch.randn(batch, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layer", [0, 1])
def test_encoding_from_a_blocks_head_outputs_equals_the_full_pass(tiny_hooked_whisper, layer):
    m = tiny_hooked_whisper
    feats = _feats(m)
    pre, z = f"encoder.blocks.{layer}.hook_resid_pre", f"encoder.blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        full = m.encode(feats)
        _, cache = m.run_with_cache(
            input_features=feats, decoder_input_ids=torch.tensor([[1], [1]]), names_filter=[pre, z]
        )
        resumed = m.encode(cache[pre], start_at_layer=layer, attn_z=cache[z])
    torch.testing.assert_close(resumed, full, atol=1e-5, rtol=0)


def test_hooks_from_hook_z_on_fire_and_patch_the_resumed_run(tiny_hooked_whisper):
    m = tiny_hooked_whisper
    feats, layer = _feats(m), 1
    pre, z = f"encoder.blocks.{layer}.hook_resid_pre", f"encoder.blocks.{layer}.attn.hook_z"
    fired: list[str] = []

    def zero_head_2(x, hook):
        fired.append(hook.name)
        x = x.clone()
        x[:, :, 2] = 0
        return x

    def seen(x, hook):
        fired.append(hook.name)

    with torch.no_grad():
        _, cache = m.run_with_cache(
            input_features=feats, decoder_input_ids=torch.tensor([[1], [1]]), names_filter=[pre, z]
        )
        with m.hooks(fwd_hooks=[(z, zero_head_2)]):
            want = m.encode(feats)
        fired.clear()
        hooks = [
            (z, zero_head_2),
            (pre, seen),
            (f"encoder.blocks.{layer}.attn.hook_q", seen),
            (f"encoder.blocks.{layer}.hook_attn_out", seen),
        ]
        with m.hooks(fwd_hooks=hooks):
            got = m.encode(cache[pre], start_at_layer=layer, attn_z=cache[z])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert fired == [z, f"encoder.blocks.{layer}.hook_attn_out"]  # nothing before hook_z ran
    assert not torch.allclose(got, m.encode(feats), atol=1e-3)  # the patch did something


def test_attn_z_needs_start_at_layer_and_its_shape(tiny_hooked_whisper):
    m = tiny_hooked_whisper
    cfg = m.cfg.encoder
    resid = torch.zeros(1, cfg.n_ctx, cfg.d_model)
    z = torch.zeros(1, cfg.n_ctx, cfg.n_heads, cfg.d_model // cfg.n_heads)
    with pytest.raises(ValueError, match="start_at_layer"):
        m.encode(_feats(m, 1), attn_z=z)
    with pytest.raises(ValueError, match="hook_z"):
        m.encode(resid, start_at_layer=0, attn_z=z[:, :5])
