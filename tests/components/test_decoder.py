"""The text decoder: its key/value cache means what it says."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.components.decoder import TextDecoder, reorder_cache
from hooked_asr.config import DecoderConfig


def _decoder(**kw) -> TextDecoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(d_model=32, n_heads=4, n_layers=2, d_mlp=64, d_vocab=50, n_ctx=16, **kw)
    dec = TextDecoder(cfg)
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_(0, 0.3)
    return dec


ROTARY = dict(
    norm="rmsnorm", positional="rotary", mlp="gated_silu", cross_attention=False, n_key_value_heads=2, tie_unembed=False
)


@pytest.mark.parametrize("kw", [{}, ROTARY], ids=["whisper", "qwen2"])
def test_reorder_cache_continues_as_if_the_chosen_rows_had_been_decoded(kw):
    # Beam search keeps rows beam_idx after a step; decoding on with the reordered cache must
    # give what a fresh run of the reordered prefixes gives (rows repeated and dropped).
    dec = _decoder(**kw)
    enc = torch.randn(3, 10, 32) if dec.cfg.cross_attention else None
    prefix = torch.randint(0, 50, (3, 5))
    _, cache = dec(prefix, encoder_out=enc)
    beam_idx = torch.tensor([2, 0, 2, 1])
    new_tok = torch.randint(0, 50, (4, 1))
    step, _ = dec(new_tok, past_kv=reorder_cache(cache, beam_idx))
    enc_r = enc[beam_idx] if enc is not None else None
    full, _ = dec(torch.cat([prefix[beam_idx], new_tok], 1), encoder_out=enc_r)
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=0)
    # every cached tensor (self and cross) is reordered, and the input cache is untouched
    reordered = reorder_cache(cache, beam_idx)
    for old, new in zip(cache, reordered):
        assert set(new) == set(old) == ({"self", "cross"} if enc is not None else {"self"})
        for kind in old:
            for a, b in zip(old[kind], new[kind]):
                assert b.shape[0] == 4 and a.shape[0] == 3
                torch.testing.assert_close(b, a[beam_idx], atol=0, rtol=0)


def test_reorder_cache_rejects_a_non_index_tensor():
    dec = _decoder()
    _, cache = dec(torch.zeros(2, 3, dtype=torch.long), encoder_out=torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match="beam_idx"):
        reorder_cache(cache, torch.tensor([0.0, 1.0]))


def test_unembedding_reads_w_e_as_it_is_now_after_loading_and_after_edits():
    # The tied unembedding reads W_E^T from a transposed-in-memory W_E (no cached copy that
    # could go stale): after load_state_dict(assign=True) of a row-major tensor, and after an
    # in-place edit (even through .data, which bumps no version counter), logits are x W_E^T.
    dec = _decoder()
    fresh = torch.randn(50, 32)
    dec.load_state_dict({**dec.state_dict(), "W_E": fresh}, assign=True)
    assert dec.W_U.is_contiguous() and torch.equal(dec.W_E, fresh)
    x = torch.randn(3, 1, 32)
    torch.testing.assert_close(dec.unembed(x), torch.nn.functional.linear(x, fresh), atol=1e-5, rtol=0)
    dec.W_E.data[7] = 100.0
    torch.testing.assert_close(dec.unembed(x)[..., 7], x.sum(-1) * 100.0, atol=1e-4, rtol=1e-6)
    # gradients still reach the tied weight through both the embedding and the unembedding
    dec.zero_grad()
    logits, _ = dec(torch.tensor([[1, 2]]), encoder_out=torch.randn(1, 4, 32))
    logits[0, -1, 3].backward()
    assert dec.W_E.grad[3].abs().sum() > 0 and dec.W_E.grad[1].abs().sum() > 0


def test_attention_weights_are_relaid_for_one_gemm_and_keep_their_values():
    from hooked_asr.components.attention import _flat_is_view

    dec = _decoder()
    attn = dec.blocks[0].attn
    sd = {k: v.contiguous() for k, v in dec.state_dict().items()}  # what a checkpoint file holds
    x = torch.randn(2, 3, 32)
    before, _ = attn(x)
    dec.load_state_dict(sd, assign=True)
    assert all(_flat_is_view(getattr(attn, n)) for n in ("W_Q", "W_K", "W_V"))
    assert all(torch.equal(getattr(attn, n), sd[f"blocks.0.attn.{n}"]) for n in ("W_Q", "W_K", "W_V"))
    torch.testing.assert_close(attn(x)[0], before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kw", [{}, ROTARY], ids=["whisper", "qwen2"])
def test_logits_only_at_gives_the_full_forwards_logits_there_and_everything_to_a_hook(kw):
    # Decoding reads the last position (and the no-speech one); inside logits_only_at the other
    # positions are not computed, unless a hook on hook_logits would see them.
    dec = _decoder(**kw)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    enc = torch.randn(2, 4, 32) if dec.cfg.cross_attention else None
    with torch.no_grad():
        full, _ = dec(ids, encoder_out=enc)
        with dec.logits_only_at([1, -1]):
            some, _ = dec(ids, encoder_out=enc)
        torch.testing.assert_close(some, full[:, [1, -1]], atol=1e-5, rtol=0)
        seen = []
        dec.hook_logits.add_hook(lambda t, hook: seen.append(t.shape))
        try:
            with dec.logits_only_at([-1]):
                hooked, _ = dec(ids, encoder_out=enc)
        finally:
            dec.hook_logits.remove_hooks()
    assert seen == [full.shape] and torch.equal(hooked, full)


def test_unembedding_of_many_rows_equals_the_product_and_keeps_its_gradient():
    # Three rows and more take oneDNN's linear: the values are x W_U, and the gradient is x's.
    from hooked_asr.components.products import decoding_products

    dec = _decoder()
    x = torch.randn(5, 3, 32)
    with torch.no_grad(), decoding_products():
        torch.testing.assert_close(dec.unembed(x), x @ dec.W_U.detach(), atol=1e-5, rtol=1e-5)
    x.requires_grad_(True)
    with decoding_products():
        dec.unembed(x)[..., 3].sum().backward()
    torch.testing.assert_close(x.grad, dec.W_U.detach()[:, 3].expand_as(x))
