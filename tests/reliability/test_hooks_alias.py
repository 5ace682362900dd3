"""An in-place edit inside a hook stays inside that forward pass: it never writes into a
parameter (W_pos) or into the caller's own input tensors, so later runs are unaffected."""

from __future__ import annotations

import pytest
import torch


def _edit_in_place(x, hook):
    x.add_(1.0)


def _features(model, batch: int = 1) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(batch, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)


@pytest.mark.parametrize(
    "hook_name", ["encoder.hook_pos_embed", "decoder.hook_pos_embed", "encoder.hook_mel", "decoder.hook_embed"]
)
@pytest.mark.parametrize("batch", [1, 2])
def test_in_place_hook_leaves_weights_and_inputs_alone(tiny_hooked_whisper, hook_name, batch):
    model = tiny_hooked_whisper
    feats = _features(model, batch)
    feats_before = feats.clone()
    tokens = torch.tensor([[model.cfg.decoder_start_token_id, 50, 60]] * batch)
    params_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = model(input_features=feats, decoder_input_ids=tokens)
        hooked = model.run_with_hooks(
            input_features=feats, decoder_input_ids=tokens, fwd_hooks=[(hook_name, _edit_in_place)]
        )
        after = model(input_features=feats, decoder_input_ids=tokens)
    assert not torch.allclose(hooked, clean), "the in-place edit should change this run"
    torch.testing.assert_close(feats, feats_before, rtol=0, atol=0, msg="the caller's input_features changed")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, params_before[k], rtol=0, atol=0, msg=f"parameter {k} changed")
    torch.testing.assert_close(after, clean, rtol=0, atol=0, msg="a later unhooked run differs")


def test_in_place_hook_on_caller_inputs_embeds_leaves_them_alone(tiny_hooked_whisper):
    model = tiny_hooked_whisper
    dec = model.decoder
    torch.manual_seed(0)
    emb = torch.randn(1, 3, model.cfg.decoder.d_model)
    before = emb.clone()
    enc = torch.randn(1, model.cfg.encoder.n_ctx, model.cfg.encoder.d_model)
    with torch.no_grad(), model.hooks(fwd_hooks=[("decoder.hook_embed", _edit_in_place)]):
        dec(inputs_embeds=emb, encoder_out=enc)
    torch.testing.assert_close(emb, before, rtol=0, atol=0)
