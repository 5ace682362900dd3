"""Hook mechanics: TransformerLens semantics, clear errors, no hook left behind."""

from __future__ import annotations

import pytest
import torch

from hooked_asr import act_name
from hooked_asr.hooks import HookShapeError


@pytest.fixture
def inputs(tiny_hooked_whisper):
    m = tiny_hooked_whisper
    torch.manual_seed(0)
    return torch.randn(1, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames), torch.tensor(
        [[m.cfg.decoder_start_token_id, 5, 6]]
    )


def _n_hooks(model):
    return sum(len(hp.fwd_hooks) + len(hp._forward_hooks) for hp in model.hook_dict.values())


def test_every_contract_hook_exists(tiny_hooked_whisper):
    names = set(tiny_hooked_whisper.hook_dict)
    for stack in ["encoder", "decoder"]:
        for site in [
            "resid_pre",
            "resid_mid",
            "resid_post",
            "attn_out",
            "mlp_out",
            "q",
            "k",
            "v",
            "z",
            "attn_scores",
            "pattern",
            "result",
            "pre",
            "post",
        ]:
            assert act_name(site, 1, stack) in names
        for ln in ["ln1", "ln2"]:
            assert f"{stack}.blocks.0.{ln}.hook_scale" in names and f"{stack}.blocks.0.{ln}.hook_normalized" in names
        assert f"{stack}.ln_final.hook_normalized" in names
    for site in [
        "cross_q",
        "cross_k",
        "cross_v",
        "cross_z",
        "cross_attn_scores",
        "cross_pattern",
        "cross_result",
        "cross_attn_out",
        "resid_mid_cross",
    ]:
        assert act_name(site, 0, "decoder") in names
    for n in [
        "encoder.hook_mel",
        "encoder.hook_conv1",
        "encoder.hook_conv2",
        "encoder.hook_pos_embed",
        "encoder.hook_out",
        "decoder.hook_embed",
        "decoder.hook_pos_embed",
        "decoder.hook_logits",
    ]:
        assert n in names


def test_cache_shapes_follow_the_contract(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, tok = inputs
    _, cache = m.run_with_cache(input_features=mel, decoder_input_ids=tok)
    F, T, H = m.cfg.encoder.n_ctx, tok.shape[1], m.cfg.decoder.n_heads
    d, dh = m.cfg.decoder.d_model, m.cfg.decoder.d_head
    assert cache["encoder.hook_mel"].shape == mel.shape
    assert cache["encoder.blocks.0.hook_resid_pre"].shape == (1, F, d)
    assert cache["encoder.blocks.0.attn.hook_q"].shape == (1, F, H, dh)
    assert cache["decoder.blocks.1.cross_attn.hook_pattern"].shape == (1, H, T, F)
    assert cache["decoder.blocks.1.cross_attn.hook_k"].shape == (1, F, H, dh)
    assert cache["decoder.blocks.0.attn.hook_attn_scores"].shape == (1, H, T, T)
    assert cache["decoder.hook_logits"].shape == (1, T, m.cfg.decoder.d_vocab)


def test_names_filter_caches_only_that_hook(tiny_hooked_whisper, inputs):
    mel, tok = inputs
    name = "decoder.blocks.1.hook_resid_post"
    _, cache = tiny_hooked_whisper.run_with_cache(input_features=mel, decoder_input_ids=tok, names_filter=name)
    assert list(cache) == [name]


def test_layernorm_scale_hook_matches_fused_path(tiny_hooked_whisper, inputs):
    mel, tok = inputs
    plain = tiny_hooked_whisper(input_features=mel, decoder_input_ids=tok)
    logits, cache = tiny_hooked_whisper.run_with_cache(input_features=mel, decoder_input_ids=tok)
    torch.testing.assert_close(plain, logits, atol=1e-5, rtol=0)
    x = cache["decoder.blocks.0.hook_resid_pre"]
    torch.testing.assert_close(
        cache["decoder.blocks.0.ln1.hook_scale"], (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    )


def test_unknown_hook_names_say_the_valid_range(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, tok = inputs
    with pytest.raises(KeyError, match=r"decoder has 2 blocks \(0-1\)"):
        m.run_with_hooks(
            input_features=mel, decoder_input_ids=tok, fwd_hooks=[("decoder.blocks.9.attn.hook_z", lambda x, hook: x)]
        )
    with pytest.raises(KeyError, match="did you mean 'encoder.blocks.0.hook_resid_post'"):
        m.add_hook("encoder.blocks.0.hook_resid_pots", lambda x, hook: x)
    with pytest.raises(KeyError, match="encoder has 2 blocks"):
        m.run_with_cache(input_features=mel, decoder_input_ids=tok, names_filter=["encoder.blocks.5.hook_resid_post"])
    assert _n_hooks(m) == 0


def test_wrong_shape_from_a_hook_is_an_error(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, tok = inputs
    with pytest.raises(HookShapeError, match=r"decoder.blocks.0.hook_resid_post.*same shape"):
        m.run_with_hooks(
            input_features=mel,
            decoder_input_ids=tok,
            fwd_hooks=[("decoder.blocks.0.hook_resid_post", lambda x, hook: x[:, :1])],
        )
    assert _n_hooks(m) == 0


def test_a_raising_hook_leaves_no_hook_behind(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, tok = inputs

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with m.hooks(fwd_hooks=[("encoder.blocks.1.hook_mlp_out", boom), ("decoder.hook_embed", lambda x, hook: x)]):
            m(input_features=mel, decoder_input_ids=tok)
    assert _n_hooks(m) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with m.hooks(fwd_hooks=[("decoder.blocks.0.cross_attn.hook_z", boom)]):
            m.generate(mel, [m.cfg.decoder_start_token_id], max_new_tokens=3)
    assert _n_hooks(m) == 0


def test_hooks_are_live_at_every_decoding_step(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, _ = inputs
    seen = {"cached": [], "full": []}
    for mode, use_cache in [("cached", True), ("full", False)]:
        with m.hooks(
            fwd_hooks=[("decoder.blocks.0.hook_resid_post", lambda x, hook, mode=mode: seen[mode].append(x.shape[1]))]
        ):
            out = m.generate(mel, [m.cfg.decoder_start_token_id, 5], max_new_tokens=4, use_cache=use_cache)
    n = out.tokens.shape[1]
    assert seen["cached"] == [2] + [1] * (n - 1)
    assert seen["full"] == [2 + i for i in range(n)]


def test_a_patch_during_generation_changes_the_transcript(tiny_hooked_whisper, inputs):
    m = tiny_hooked_whisper
    mel, _ = inputs
    prompt = [m.cfg.decoder_start_token_id]
    base = m.generate(mel, prompt, max_new_tokens=6)
    with m.hooks(fwd_hooks=[("decoder.blocks.1.hook_resid_post", lambda x, hook: x * 0 + x.mean())]):
        patched = m.generate(mel, prompt, max_new_tokens=6)
    assert base.tokens.tolist() != patched.tokens.tolist()
    assert m.generate(mel, prompt, max_new_tokens=6).tokens.tolist() == base.tokens.tolist()


def test_bad_inputs_say_what_to_do(tiny_hooked_whisper):
    m = tiny_hooked_whisper
    with pytest.raises(ValueError, match=r"input_features must have shape \[batch, 80, 120\]"):
        m(input_features=torch.randn(1, 80, 50), decoder_input_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="NaN"):
        m(input_features=torch.full((1, 80, 120), float("nan")), decoder_input_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match="token ids must lie in"):
        m(input_features=torch.randn(1, 80, 120), decoder_input_ids=torch.tensor([[10**6]]))
    with pytest.raises(ValueError, match="reads at most 40 tokens"):
        m(input_features=torch.randn(1, 80, 120), decoder_input_ids=torch.zeros(1, 41, dtype=torch.long))
