"""TransformerLens parity on the model (hooked_asr/models/tl_compat.py): the cache-size estimate
against the bytes actually cached, slicing / offload / dtype, run_with_hooks' loss against a
cross-entropy computed from Hugging Face's logits, gradients cached with incl_bwd, tokens, the flat
cfg aliases, and the stacked weights and QK / OV circuits against the raw parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hooked_asr import HookedQwen2Audio, HookedWhisper
from hooked_asr import ActivationCache
from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_whisper("v3-128mel")
    return hf, HookedWhisper.from_hf(hf)


@pytest.fixture(scope="module")
def qwen():
    return HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())


def _w_inputs(model, batch=2, n_tok=6):
    g = torch.Generator().manual_seed(0)
    return {
        "input_features": torch.randn(batch, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames, generator=g),
        "decoder_input_ids": torch.randint(0, 1000, (batch, n_tok), generator=g),
    }


def _q_inputs(model):
    audio = (0.1 * np.random.default_rng(0).standard_normal(model.cfg.encoder.n_frames * 160)).astype(np.float32)
    return model.teacher_forced_inputs(audio, [7, 8, 9]).kwargs


def _measured(cache):
    """Bytes the cache holds per hook (an ActivationCache keeps a pattern as its scores and rebuilds it
    on access: its held tensors are ``cache_dict``)."""
    held = getattr(cache, "cache_dict", cache)
    return {k: v.numel() * v.element_size() for k, v in held.items()}


@pytest.mark.parametrize("which", ["whisper", "qwen"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pos_slice": (1, 4)},
        {"frame_slice": [0, 3, 5], "dtype": torch.float16},
        {"names_filter": lambda n: "pattern" in n, "pos_slice": -1},
    ],
)
def test_cache_size_estimate_matches_the_bytes_cached(which, kw, pair, qwen):
    model = pair[1] if which == "whisper" else qwen
    inputs = _w_inputs(model) if which == "whisper" else _q_inputs(model)
    est = model.estimate_cache_size(**inputs, **kw)
    _, cache = model.run_with_cache(**inputs, **kw)
    got = _measured(cache)
    assert set(est.per_hook) == set(got)
    assert abs(est.total_bytes - sum(got.values())) <= 0.1 * sum(got.values())
    assert est.per_hook == got  # exact, hook by hook


def test_real_tiny_en_cache_estimate_30s(whisper_tiny_en):
    m = whisper_tiny_en
    inputs = {
        "input_features": torch.zeros(1, 80, 3000),
        "decoder_input_ids": torch.tensor([m.sot_sequence() + [400, 500]]),
    }
    keep = lambda n: not n.endswith(("attn_scores", "hook_pattern")) or n.startswith("decoder")
    est = m.estimate_cache_size(**inputs, names_filter=keep)
    _, cache = m.run_with_cache(**inputs, names_filter=keep)
    total = sum(_measured(cache).values())
    assert abs(est.total_bytes - total) <= 0.1 * total and est.total_bytes == total


def test_large_cache_warns_before_running(pair):
    model = pair[1]
    calls = []
    model.cache_warn_bytes = 1000
    try:
        with model.hooks([("encoder.hook_mel", lambda t, hook: calls.append(1))]):
            with pytest.warns(UserWarning, match="large cache of .* hooks"):
                model.run_with_cache(**_w_inputs(model))
    finally:
        del model.cache_warn_bytes
    assert calls == [1]


def test_slicing_offload_and_dtype(pair):
    model = pair[1]
    inputs = _w_inputs(model)
    _, full = model.run_with_cache(**inputs)
    _, part = model.run_with_cache(**inputs, pos_slice=(2, 5), frame_slice=[1, 4], dtype=torch.float16, device="cpu")
    assert torch.equal(part["decoder.blocks.0.hook_resid_pre"], full["decoder.blocks.0.hook_resid_pre"][:, 2:5].half())
    assert torch.equal(part["decoder.blocks.1.attn.hook_z"], full["decoder.blocks.1.attn.hook_z"][:, 2:5].half())
    assert torch.equal(
        part["decoder.blocks.1.cross_attn.hook_pattern"],
        full["decoder.blocks.1.cross_attn.hook_pattern"][:, :, 2:5][..., [1, 4]].half(),
    )
    assert torch.equal(
        part["decoder.blocks.1.cross_attn.hook_k"], full["decoder.blocks.1.cross_attn.hook_k"][:, [1, 4]].half()
    )
    assert torch.equal(
        part["encoder.blocks.0.attn.hook_pattern"], full["encoder.blocks.0.attn.hook_pattern"][:, :, [1, 4]].half()
    )
    assert torch.equal(part["encoder.hook_conv2"], full["encoder.hook_conv2"][..., [1, 4]].half())
    _, one = model.run_with_cache(
        **{k: v[:1] for k, v in inputs.items()}, remove_batch_dim=True, return_cache_object=True
    )
    assert isinstance(one, ActivationCache) and not one.has_batch_dim
    assert torch.allclose(one["resid_post", 2], full["decoder.blocks.2.hook_resid_post"][0], atol=1e-4)


def test_run_with_hooks_loss_matches_hf_cross_entropy(pair):
    hf, model = pair
    inputs = _w_inputs(model)
    with torch.no_grad():
        hf_logits = hf(input_features=inputs["input_features"], decoder_input_ids=inputs["decoder_input_ids"]).logits
    toks = inputs["decoder_input_ids"]
    want = F.cross_entropy(hf_logits[:, :-1].reshape(-1, hf_logits.shape[-1]), toks[:, 1:].reshape(-1))
    with torch.no_grad():
        loss = model.run_with_hooks(**inputs, return_type="loss")
        per_tok = model.run_with_hooks(**inputs, return_type="loss", loss_per_token=True)
        assert model.run_with_hooks(**inputs, return_type=None) is None
        positional = model.run_with_hooks(inputs["input_features"], inputs["decoder_input_ids"])
    assert loss.ndim == 0 and abs(loss.item() - want.item()) < 1e-4
    assert per_tok.shape == (2, 5) and torch.allclose(per_tok.mean(), loss)
    assert torch.allclose(positional, hf_logits, atol=1e-4)
    with pytest.raises(ValueError, match="return_type"):
        model.run_with_hooks(**inputs, return_type="logprobs")


def test_incl_bwd_caches_gradients_of_the_loss(pair):
    model = pair[1]
    inputs = _w_inputs(model)
    name = "decoder.blocks.1.hook_resid_mid"
    loss, cache = model.run_with_cache(
        **inputs, names_filter=[name, "decoder.blocks.1.cross_attn.hook_pattern"], incl_bwd=True, return_type="loss"
    )
    model.zero_grad(set_to_none=True)
    # The same gradient by autograd directly: d loss / d resid_mid, via a leaf substituted in a hook.
    leaf = {}

    def grab(t, hook):
        leaf["x"] = t.detach().requires_grad_(True)
        return leaf["x"]

    out = model.run_with_hooks(**inputs, fwd_hooks=[(name, grab)], return_type="loss")
    (grad,) = torch.autograd.grad(out, leaf["x"])
    assert torch.allclose(cache[name + "_grad"], grad, atol=1e-6)
    assert (
        cache["decoder.blocks.1.cross_attn.hook_pattern_grad"].shape
        == cache["decoder.blocks.1.cross_attn.hook_pattern"].shape
    )
    with pytest.raises(ValueError, match="scalar"):
        model.run_with_cache(**inputs, names_filter=[name], incl_bwd=True)
    model.zero_grad(set_to_none=True)


def test_tokens_round_trip(whisper_tiny_en):
    m = whisper_tiny_en
    toks = m.to_tokens(" the cat sat")
    assert toks.shape[0] == 1 and toks[0, : len(m.sot_sequence())].tolist() == m.sot_sequence()
    assert m.to_string(toks[0, len(m.sot_sequence()) :]) == " the cat sat"
    strs = m.to_str_tokens(" the cat sat")
    assert strs[0] == "<|startoftranscript|>" and "".join(strs[len(m.sot_sequence()) :]) == " the cat sat"
    assert m.to_single_token(" the") == m.tokenizer.encode(" the")[0]
    with pytest.raises(ValueError, match="not one"):
        m.to_single_token(" the cat")
    assert torch.equal(m.tokens_to_residual_directions(" the"), m.W_U[:, m.to_single_token(" the")])


def test_cfg_aliases(pair, qwen):
    cfg = pair[1].cfg
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab) == (96, 6, 16, 384, 51866)
    assert cfg.n_layers == 3 and cfg.n_layers("encoder") == 2 and cfg.n_layers("decoder") == 3
    assert cfg.normalization_type == "LN" and cfg.positional_embedding_type == "standard"
    q = qwen.cfg
    assert q.normalization_type == "RMS" and q.n_key_value_heads == 2 and q.n_heads == 8 and q.act_fn == "silu"
    assert "d_model" not in cfg.to_dict()  # aliases are not fields: the saved config is unchanged


def test_stacked_weights_and_circuits_match_parameters(pair, qwen):
    model = pair[1]
    a = model.decoder.blocks[1].cross_attn
    w = model.weights("decoder", "cross_attn")
    assert (
        torch.equal(w.W_Q[1], a.W_Q) and torch.equal(w.W_O[1], a.W_O) and torch.equal(w.b_K[1], torch.zeros_like(a.b_Q))
    )
    assert torch.equal(model.W_Q[2], model.decoder.blocks[2].attn.W_Q)
    assert w.QK.shape == (3, 6, 96, 96)
    from hooked_asr.circuits import OV, QK

    assert torch.allclose(QK(model, "decoder", "cross_attn", 1, 4).AB, a.W_Q[4] @ a.W_K[4].T)
    assert torch.allclose(
        OV(model, "encoder", "attn", 0, 2).AB, model.encoder.blocks[0].attn.W_V[2] @ model.encoder.blocks[0].attn.W_O[2]
    )
    # Grouped-query: query head h reads key/value head h // (n_heads // n_kv_heads) = h // 4.
    qa = qwen.decoder.blocks[0].attn
    assert torch.equal(qwen.W_K[0, 5], qa.W_K[1]) and torch.equal(qwen.W_V[0, 3], qa.W_V[0])
    assert torch.allclose(QK(qwen, layer=0, head=6).AB, qa.W_Q[6] @ qa.W_K[1].T)
    with pytest.raises(ValueError, match="no 'cross_attn'"):
        qwen.weights("decoder", "cross_attn")
    with pytest.raises(ValueError, match="head 8 does not exist"):
        OV(qwen, layer=0, head=8)


def test_set_use_attn_result(pair):
    model = pair[1]
    model.set_use_attn_result(True)
    try:
        _, cache = model.run_with_cache(**_w_inputs(model), names_filter=lambda n: n.endswith("hook_result"))
    finally:
        model.set_use_attn_result(False)
    assert len(cache) == 2 + 3 + 3 and cache["decoder.blocks.0.cross_attn.hook_result"].shape == (2, 6, 6, 96)


def test_run_with_cache_returns_an_activation_cache_as_hooked_transformer(pair, qwen):
    """HookedTransformer.run_with_cache returns an ActivationCache; the dict by flag, same tensors."""
    for model, inputs in ((pair[1], _w_inputs(pair[1])), (qwen, _q_inputs(qwen))):
        logits, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
        plain_logits, plain = model.run_with_cache(
            **inputs, names_filter=lambda n: n.endswith("hook_resid_post"), return_cache_object=False
        )
        assert isinstance(cache, ActivationCache) and type(plain) is dict
        assert list(cache) == list(plain) and len(cache) == model.cfg.n_layers("encoder") + model.cfg.n_layers
        for name in plain:
            assert torch.equal(cache[name], plain[name])
        torch.testing.assert_close(logits, plain_logits, rtol=0, atol=0)
        assert torch.equal(cache["resid_post", 0], plain["decoder.blocks.0.hook_resid_post"])


def test_cfg_device_and_dtype_follow_the_model():
    """TransformerLens's utilities read cfg.device / cfg.dtype; .to keeps them current, the saved config
    does not carry them."""
    model = HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))
    assert model.cfg.device == "cpu" and model.cfg.dtype == torch.float32
    model.to(torch.float64)
    assert model.cfg.dtype == torch.float64 and model.cfg.device == str(model.device)
    assert "device" not in model.cfg.to_dict() and "dtype" not in model.cfg.to_dict()
