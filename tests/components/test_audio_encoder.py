"""The audio encoder: resuming at a block gives what the full pass gives."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("layer", [0, 1])
def test_encoding_from_a_blocks_residual_equals_the_full_pass(tiny_hooked_whisper, layer):
    m = tiny_hooked_whisper
    feats = torch.randn(2, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames, generator=torch.Generator().manual_seed(0))
    name = f"encoder.blocks.{layer}.hook_resid_pre"
    with torch.no_grad():
        full, cache = m.run_with_cache(
            input_features=feats, decoder_input_ids=torch.tensor([[1], [1]]), names_filter=[name, "encoder.hook_out"]
        )
        resumed = m.encoder(cache[name], start_at_layer=layer)
    torch.testing.assert_close(resumed, cache["encoder.hook_out"], atol=1e-5, rtol=0)


def test_start_at_layer_checks_its_input(tiny_hooked_whisper):
    m = tiny_hooked_whisper
    with pytest.raises(ValueError, match="hook_resid_pre"):
        m.encoder(torch.randn(1, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames), start_at_layer=1)


def test_the_residual_stream_is_stored_frame_major(tiny_hooked_whisper):
    # Every LayerNorm and residual add reads it; stored channel-major (conv2's layout), each
    # LayerNorm would first copy it.
    m = tiny_hooked_whisper
    feats = torch.randn(1, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames, generator=torch.Generator().manual_seed(0))
    names = [
        f"encoder.blocks.{layer}.hook_resid_{s}" for layer in range(m.cfg.encoder.n_layers) for s in ("pre", "post")
    ]
    with torch.no_grad():
        _, cache = m.run_with_cache(input_features=feats, decoder_input_ids=torch.tensor([[1]]), names_filter=names)
    assert all(cache[n].is_contiguous() for n in names), [n for n in names if not cache[n].is_contiguous()]
