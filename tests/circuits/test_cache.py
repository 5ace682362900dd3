"""The cache object: decompositions sum to the residual stream, the LN scale agrees with the norm
module's own output, logit attributions sum to the logits, and every helper agrees with
TransformerLens's own ActivationCache run over a decoder-only view of one stack (Whisper's encoder:
LayerNorm; Qwen2-Audio's decoder: RMSNorm, grouped-query attention)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformer_lens import ActivationCache as TLCache

from hooked_asr import ActivationCache
from tests.circuits.conftest import qwen_inputs, whisper_inputs

ATOL = 1e-4


@pytest.fixture(scope="module")
def wcache(whisper_rand):
    return whisper_rand.run_with_cache(**whisper_inputs(whisper_rand), return_cache_object=True)


@pytest.fixture(scope="module")
def qcache(qwen_gqa):
    return qwen_gqa.run_with_cache(**qwen_inputs(qwen_gqa), return_cache_object=True)


def _close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err < atol, err


def _points(model, stack):
    """(layer, mlp_input, cross_input, hook of the residual at that point) for every sublayer input."""
    n = model.n_layers[stack]
    cross = "cross_attn" in model.attention_kinds(stack)
    out = [(n, False, False, f"{stack}.blocks.{n - 1}.hook_resid_post")]
    for l in range(n):
        out.append((l, False, False, f"{stack}.blocks.{l}.hook_resid_pre"))
        out.append(
            (
                l,
                True,
                False,
                f"{stack}.blocks.{l}.hook_resid_mid_cross" if cross else f"{stack}.blocks.{l}.hook_resid_mid",
            )
        )
        if cross:
            out.append((l, False, True, f"{stack}.blocks.{l}.hook_resid_mid"))
    return out


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_decompositions_sum_to_the_residual_stream(which, wcache, qcache, whisper_rand, qwen_gqa):
    model, (_, cache) = (whisper_rand, wcache) if which == "whisper" else (qwen_gqa, qcache)
    for stack in ("encoder", "decoder"):
        for layer, mlp_in, cross_in, hook in _points(model, stack):
            kw = dict(mlp_input=mlp_in, cross_input=cross_in, stack=stack)
            _close(cache.decompose_resid(layer, **kw).sum(0), cache[hook])
            for expand in (False, True):
                for split in (False, True):
                    full = cache.get_full_resid_decomposition(layer, expand_neurons=expand, split_biases=split, **kw)
                    _close(full.sum(0), cache[hook])
        acc, labels = cache.accumulated_resid(return_labels=True, incl_mid=True, stack=stack)
        _close(acc[-1], cache[labels[-1]])
        assert labels[-1].endswith("hook_resid_post") and all(lab in cache for lab in labels)
        heads = cache.stack_head_results(incl_remainder=True, stack=stack)
        _close(heads.sum(0), cache[f"{stack}.blocks.{model.n_layers[stack] - 1}.hook_resid_post"])


def test_labels_are_components(wcache, whisper_rand):
    _, cache = wcache
    _, labels = cache.get_full_resid_decomposition(expand_neurons=False, split_biases=True, return_labels=True)
    assert labels[:1] == ["decoder.blocks.0.attn.head.0"]
    assert "decoder.blocks.1.cross_attn.head.5" in labels and "decoder.blocks.2.mlp" in labels
    assert labels[-8:-6] == ["decoder.hook_embed", "decoder.hook_pos_embed"]
    assert "decoder.blocks.2.cross_attn.b_O" in labels
    _, labels = cache.decompose_resid(1, cross_input=True, return_labels=True)
    assert labels[-2:] == ["decoder.blocks.0.mlp", "decoder.blocks.1.attn"]
    _, labels = cache.decompose_resid(return_labels=True, stack="encoder")
    assert labels[:2] == ["encoder.hook_conv2", "encoder.hook_pos_embed"]


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_apply_ln_matches_the_norm_module_output(which, wcache, qcache, whisper_rand, qwen_gqa):
    """sum_i apply_ln(c_i) * w + b equals the norm's hook_normalized, from the cached scale and,
    with hook_scale left out of the cache, from the scale recomputed by hand."""
    model, (_, cache) = (whisper_rand, wcache) if which == "whisper" else (qwen_gqa, qcache)
    no_scale = ActivationCache({k: v for k, v in cache.items() if not k.endswith("hook_scale")}, model)
    for stack in ("encoder", "decoder"):
        for layer, mlp_in, cross_in, _ in _points(model, stack):
            if stack == "encoder" and layer == model.n_layers[stack] and model.cfg.encoder.pool_stride:
                continue  # the encoder's final norm follows pooling (refused, tested below)
            norm_name = cache._norm_name(layer, stack, mlp_in, cross_in)
            norm = model.get_submodule(norm_name)
            b = getattr(norm, "b", None)
            for c in (cache, no_scale):
                kw = dict(mlp_input=mlp_in, cross_input=cross_in, stack=stack)
                ln = c.decompose_resid(layer, apply_ln=True, **kw).sum(0) * norm.w + (0 if b is None else b)
                _close(ln, cache[f"{norm_name}.hook_normalized"])
    if model.cfg.encoder.pool_stride:
        with pytest.raises(ValueError, match="pooling"):
            cache.decompose_resid(apply_ln=True, stack="encoder")


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_logit_attrs_sum_to_the_logits(which, wcache, qcache, whisper_rand, qwen_gqa):
    model, (logits, cache) = (whisper_rand, wcache) if which == "whisper" else (qwen_gqa, qcache)
    full = cache.get_full_resid_decomposition(expand_neurons=False)
    toks = torch.tensor([5, 11]) if logits.shape[0] == 2 else torch.tensor([5])
    attrs = cache.logit_attrs(full, toks)
    ln = model.decoder.ln_final
    bias = 0 if getattr(ln, "b", None) is None else ln.b @ model.W_U[:, toks]
    _close(
        attrs.sum(0) + bias[:, None] if torch.is_tensor(bias) else attrs.sum(0),
        logits[..., toks].diagonal(dim1=0, dim2=2).T,
    )
    diff = cache.logit_attrs(full, toks, incorrect_tokens=toks + 1)
    want = logits[..., toks].diagonal(dim1=0, dim2=2).T - logits[..., toks + 1].diagonal(dim1=0, dim2=2).T
    bias_d = 0 if getattr(ln, "b", None) is None else (ln.b @ (model.W_U[:, toks] - model.W_U[:, toks + 1]))[:, None]
    _close(diff.sum(0) + bias_d, want)


def test_shorthand_keys_batch_and_device(wcache, whisper_rand):
    _, cache = wcache
    # Patterns are rebuilt from the cached scores on each access (equal, not the same object).
    assert torch.equal(cache["pattern", 0, "encoder"], cache["encoder.blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["cross_pattern", 2], cache["decoder.blocks.2.cross_attn.hook_pattern"])
    assert cache["resid_post", -1] is cache["decoder.blocks.2.hook_resid_post"]
    assert cache["logits"] is cache["decoder.hook_logits"]
    assert ("z", 1, "encoder") in cache and ("z", 7, "encoder") not in cache
    with pytest.raises(KeyError, match="not in the cache"):
        ActivationCache({}, whisper_rand)["resid_pre", 0]
    with pytest.raises(KeyError, match="not in the cache"):
        ActivationCache({}, whisper_rand)["decoder.blocks.0.hook_resid_pre"]
    one = cache.apply_slice_to_batch_dim(slice(1, 2))
    assert one["resid_pre", 0].shape[0] == 1 and one.has_batch_dim
    one.remove_batch_dim()
    assert not one.has_batch_dim and one["resid_pre", 0].shape == cache["resid_pre", 0].shape[1:]
    _close(one.decompose_resid().sum(0), cache["resid_post", 2][1])
    with pytest.raises(ValueError, match="batch size 2"):
        ActivationCache(dict(cache.items()), whisper_rand).remove_batch_dim()
    moved = ActivationCache(dict(cache.items()), whisper_rand).to("meta")
    assert moved["resid_pre", 0].device.type == "meta"


# ---- agreement with TransformerLens's ActivationCache ------------------------------------------
class _TLView:
    """What TransformerLens's ActivationCache reads from a model, for one stack without
    cross-attention (written here from the weights, independently of hooked_asr.circuits)."""

    def __init__(self, model, stack):
        mod = model.get_submodule(stack)
        self.blocks, self.ln_final, self.model = mod.blocks, mod.ln_final, model
        rms = type(self.ln_final).__name__ == "RMSNorm"
        c = getattr(model.cfg, stack)
        self.cfg = SimpleNamespace(
            n_layers=c.n_layers,
            n_heads=c.n_heads,
            d_model=c.d_model,
            d_mlp=c.d_mlp,
            attn_only=False,
            normalization_type="RMS" if rms else "LN",
            final_rms=rms,
        )

    def accumulated_bias(self, layer, mlp_input=False, include_mlp_biases=True):
        total = torch.zeros(self.cfg.d_model)
        for l in range(layer):
            b_O = self.blocks[l].attn.b_O
            total = total + (0 if b_O is None else b_O)
            if include_mlp_biases and hasattr(self.blocks[l].mlp, "b_out"):
                total = total + self.blocks[l].mlp.b_out
        if mlp_input and self.blocks[layer].attn.b_O is not None:
            total = total + self.blocks[layer].attn.b_O
        return total

    def tokens_to_residual_directions(self, tokens):
        return self.model.decoder.W_U[:, tokens].T * self.ln_final.w


def _tl(model, cache, stack):
    d = {k[len(stack) + 1 :]: v for k, v in cache.items() if k.startswith(stack + ".")}
    if stack == "encoder":
        d["hook_embed"] = cache["encoder.hook_conv2"].transpose(-1, -2)
    return TLCache(d, _TLView(model, stack))


@pytest.mark.parametrize("which", ["whisper-encoder", "qwen-decoder"])
def test_agrees_with_transformer_lens_activation_cache(which, wcache, qcache, whisper_rand, qwen_gqa):
    model, (_, ours), stack = (
        (whisper_rand, wcache, "encoder") if which == "whisper-encoder" else (qwen_gqa, qcache, "decoder")
    )
    tl = _tl(model, ours, stack)
    n = model.n_layers[stack]
    final = n if not (stack == "encoder" and model.cfg.encoder.pool_stride) else n - 1
    for layer in sorted({1, final}):
        for mlp_input in [False, True] if layer < n else [False]:
            kw = dict(mlp_input=mlp_input, pos_slice=(1, 4))
            for apply_ln in (False, True):
                _close(
                    ours.decompose_resid(layer, apply_ln=apply_ln, stack=stack, **kw),
                    tl.decompose_resid(layer, apply_ln=apply_ln, **kw),
                )
                _close(
                    ours.get_full_resid_decomposition(layer, apply_ln=apply_ln, stack=stack, **kw),
                    tl.get_full_resid_decomposition(layer, apply_ln=apply_ln, **kw),
                )
                _close(
                    ours.get_full_resid_decomposition(
                        layer, expand_neurons=False, apply_ln=apply_ln, stack=stack, **kw
                    ),
                    tl.get_full_resid_decomposition(layer, expand_neurons=False, apply_ln=apply_ln, **kw),
                )
                _close(
                    ours.accumulated_resid(layer, incl_mid=True, apply_ln=apply_ln, stack=stack, **kw),
                    tl.accumulated_resid(layer, incl_mid=True, apply_ln=apply_ln, **kw),
                )
        for apply_ln in (False, True):
            _close(
                ours.stack_head_results(layer, apply_ln=apply_ln, incl_remainder=True, pos_slice=-1, stack=stack),
                tl.stack_head_results(layer, apply_ln=apply_ln, incl_remainder=True, pos_slice=-1),
            )
            _close(
                ours.stack_neuron_results(layer, neuron_slice=(0, 7), apply_ln=apply_ln, stack=stack),
                tl.stack_neuron_results(layer, neuron_slice=(0, 7), apply_ln=apply_ln),
            )
        direction = torch.randn(model.get_submodule(stack).cfg.d_model)
        _close(
            ours.stack_neuron_results(layer, apply_ln=True, project_output_onto=direction, stack=stack),
            tl.stack_neuron_results(layer, apply_ln=True, project_output_onto=direction),
        )
    if stack == "decoder":
        full = ours.get_full_resid_decomposition()
        toks = torch.tensor([3])
        _close(ours.logit_attrs(full, toks), tl.logit_attrs(tl.get_full_resid_decomposition(), toks))
