"""hooked_asr/models/runner.py: partial runs give the full run's numbers (a shared decoder prefix
with no shared row is the plain decoder) and refuse what they cannot do with the fix named."""

from __future__ import annotations

import pytest
import torch

from hooked_asr import HookedWhisper
from hooked_asr.models.runner import decode_from_prefix, encode_from
from tests.conftest import make_hf_whisper


@pytest.fixture(scope="module")
def model():
    return HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))


@torch.no_grad()
def test_decode_from_prefix_with_every_row_running_is_the_plain_decoder(model):
    enc = torch.randn(2, model.cfg.encoder.n_ctx, model.cfg.decoder.d_model)
    ids = torch.randint(0, 1000, (2, 5))
    want, _ = model.decoder(ids, encoder_out=enc)
    for layer in (0, 1, 2):
        got, present = decode_from_prefix(model.decoder, ids, enc, None, start_at_layer=layer)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert len(present) == model.cfg.decoder.n_layers


@torch.no_grad()
def test_partial_runs_name_what_is_missing(model):
    ids = torch.randint(0, 1000, (2, 5))
    with pytest.raises(ValueError, match="needs resid_pre"):
        decode_from_prefix(model.decoder, ids, None, None, start_at_layer=1, run_rows=torch.tensor([0]))
    resid = torch.randn(1, model.cfg.encoder.n_ctx, model.cfg.encoder.d_model)
    z = torch.randn(1, model.cfg.encoder.n_ctx, model.cfg.encoder.n_heads, model.cfg.encoder.d_head)
    with pytest.raises(ValueError, match="attn_z is block l's attn.hook_z"):
        encode_from(model.encoder, resid, model.cfg.encoder.n_layers, z)
    assert encode_from(model.encoder, resid, 1, z, stop_at_layer=1) is resid  # no block runs
