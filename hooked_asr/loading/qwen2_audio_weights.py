"""Hugging Face Qwen2-Audio -> hooked Qwen2-Audio: config and weights, one tensor at a time.

HF stores ``Linear`` weights as ``[out, in]``; we store TransformerLens's head-explicit
layout: q/k/v weights ``rearrange("(h d) m -> h m d")`` (k and v with the key/value head
count under grouped-query attention), output projections ``rearrange("m (h d) -> h d m")``,
MLP / projector / unembedding weights transposed to ``[in, out]``.

Conversion works on one tensor at a time (:func:`convert_tensor`), so a sharded 7B
checkpoint can be streamed shard by shard without ever holding two copies of the model.
Both key layouts are read: transformers >= 4.52 (``model.audio_tower.*``,
``model.language_model.*``, ``lm_head.weight``) and the older one the hub checkpoints
were saved in (``audio_tower.*``, ``language_model.model.*``, ``language_model.lm_head.weight``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import einops
import torch

from hooked_asr.config import DecoderConfig, EncoderConfig, ModelConfig
from hooked_asr.loading.whisper_weights import WeightConversionError

# Qwen2-Audio's chat and audio markers. Ids are read from the tokenizer when there is one;
# these are the real checkpoint's, used when a config names none.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")


def _get(c: Any, key: str, default: Any = None) -> Any:
    return c.get(key, default) if isinstance(c, Mapping) else getattr(c, key, default)


def qwen2_audio_config_from_hf(
    hf_config: Any, generation_config: Any | None = None, name: str = "qwen2-audio"
) -> ModelConfig:
    """Build a :class:`ModelConfig` from a ``transformers.Qwen2AudioConfig`` (and its generation config).

    Raises :class:`WeightConversionError` for settings the hooked model does not implement
    (sliding-window attention, non-default rotary scaling, other activations).
    """
    a, t = _get(hf_config, "audio_config"), _get(hf_config, "text_config")
    if a is None or t is None:
        raise WeightConversionError(
            f"not a Qwen2-Audio config (needs audio_config and text_config): {type(hf_config).__name__}"
        )
    if _get(a, "scale_embedding", False):
        raise WeightConversionError("audio_config.scale_embedding=True is not a Qwen2-Audio setting we support")
    if _get(a, "activation_function", "gelu") != "gelu":
        raise WeightConversionError(
            f"audio tower activation {_get(a, 'activation_function')!r}: only 'gelu' is implemented"
        )
    if _get(t, "hidden_act", "silu") != "silu":
        raise WeightConversionError(f"language model activation {_get(t, 'hidden_act')!r}: only 'silu' is implemented")
    if _get(t, "use_sliding_window", False):
        raise WeightConversionError("use_sliding_window=True: sliding-window attention is not implemented")
    rope = _get(t, "rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise WeightConversionError(f"rope_type {rope_type!r}: only the default rotary embedding is implemented")
    rope_theta = float(rope.get("rope_theta", _get(t, "rope_theta", 10000.0)))
    n_heads = _get(t, "num_attention_heads")
    d_model = _get(t, "hidden_size")
    head_dim = _get(t, "head_dim")
    enc = EncoderConfig(
        n_mels=_get(a, "num_mel_bins"),
        d_model=_get(a, "d_model"),
        n_heads=_get(a, "encoder_attention_heads"),
        n_layers=_get(a, "encoder_layers"),
        d_mlp=_get(a, "encoder_ffn_dim"),
        n_ctx=_get(a, "max_source_positions"),
        pool_stride=2,
    )
    dec = DecoderConfig(
        d_model=d_model,
        n_heads=n_heads,
        n_layers=_get(t, "num_hidden_layers"),
        d_mlp=_get(t, "intermediate_size"),
        d_vocab=_get(t, "vocab_size"),
        n_ctx=_get(t, "max_position_embeddings"),
        ln_eps=_get(t, "rms_norm_eps", 1e-6),
        n_key_value_heads=_get(t, "num_key_value_heads") or n_heads,
        d_head_override=head_dim if head_dim and head_dim != d_model // n_heads else None,
        norm="rmsnorm",
        positional="rotary",
        rope_theta=rope_theta,
        mlp="gated_silu",
        cross_attention=False,
        attn_k_bias=True,
        attn_o_bias=False,
        # Qwen2AudioForConditionalGeneration declares no tied weights: its lm_head is its own
        # tensor even when text_config.tie_word_embeddings is set, so we always read it.
        tie_unembed=False,
    )
    g = generation_config
    eos = _get(g, "eos_token_id") if g is not None else None
    if eos is None:
        eos = _get(t, "eos_token_id")
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    pad = _get(g, "pad_token_id") if g is not None else None
    pad = pad if pad is not None else _get(t, "pad_token_id")
    audio_token_id = _get(hf_config, "audio_token_id", _get(hf_config, "audio_token_index"))
    return ModelConfig(
        encoder=enc,
        decoder=dec,
        architecture="qwen2_audio",
        name=name,
        decoder_start_token_id=_get(t, "bos_token_id") if _get(t, "bos_token_id") is not None else -1,
        # The instruct model ends a reply with <|im_end|> and the base model with
        # <|endoftext|>; greedy decoding stops at the first listed, transcribe cuts at any.
        eos_token_id=eos_ids[0] if eos_ids else -1,
        pad_token_id=pad,
        is_multilingual=True,
        extra={"audio_token_id": int(audio_token_id), "stop_token_ids": [int(e) for e in eos_ids]},
    )


# ---- weights ------------------------------------------------------------------------------
_AUDIO_PREFIXES = ("model.audio_tower.", "audio_tower.")
_PROJ_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")
_LM_PREFIXES = ("model.language_model.", "language_model.model.")
_LM_HEAD = ("lm_head.weight", "language_model.lm_head.weight")

_ENC_STATIC = {
    "conv1.weight": "encoder.conv1.weight",
    "conv1.bias": "encoder.conv1.bias",
    "conv2.weight": "encoder.conv2.weight",
    "conv2.bias": "encoder.conv2.bias",
    "embed_positions.weight": "encoder.W_pos",
    "layer_norm.weight": "encoder.ln_final.w",
    "layer_norm.bias": "encoder.ln_final.b",
}
_ENC_LAYER = {
    "self_attn.q_proj.weight": ("attn.W_Q", "qkv"),
    "self_attn.q_proj.bias": ("attn.b_Q", "qkv_bias"),
    "self_attn.k_proj.weight": ("attn.W_K", "qkv"),
    "self_attn.v_proj.weight": ("attn.W_V", "qkv"),
    "self_attn.v_proj.bias": ("attn.b_V", "qkv_bias"),
    "self_attn.out_proj.weight": ("attn.W_O", "out"),
    "self_attn.out_proj.bias": ("attn.b_O", None),
    "self_attn_layer_norm.weight": ("ln1.w", None),
    "self_attn_layer_norm.bias": ("ln1.b", None),
    "final_layer_norm.weight": ("ln2.w", None),
    "final_layer_norm.bias": ("ln2.b", None),
    "fc1.weight": ("mlp.W_in", "T"),
    "fc1.bias": ("mlp.b_in", None),
    "fc2.weight": ("mlp.W_out", "T"),
    "fc2.bias": ("mlp.b_out", None),
}
# Keys whose head count is the key/value heads' (grouped-query attention).
_KV = {"self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias"}
_LM_LAYER = {
    "self_attn.q_proj.weight": ("attn.W_Q", "qkv"),
    "self_attn.q_proj.bias": ("attn.b_Q", "qkv_bias"),
    "self_attn.k_proj.weight": ("attn.W_K", "qkv"),
    "self_attn.k_proj.bias": ("attn.b_K", "qkv_bias"),
    "self_attn.v_proj.weight": ("attn.W_V", "qkv"),
    "self_attn.v_proj.bias": ("attn.b_V", "qkv_bias"),
    "self_attn.o_proj.weight": ("attn.W_O", "out"),
    "mlp.gate_proj.weight": ("mlp.W_gate", "T"),
    "mlp.up_proj.weight": ("mlp.W_in", "T"),
    "mlp.down_proj.weight": ("mlp.W_out", "T"),
    "input_layernorm.weight": ("ln1.w", None),
    "post_attention_layernorm.weight": ("ln2.w", None),
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")


def _transform(t: torch.Tensor, kind: str | None, n_heads: int) -> torch.Tensor:
    if kind == "qkv":
        return einops.rearrange(t, "(h d) m -> h m d", h=n_heads)
    if kind == "qkv_bias":
        return einops.rearrange(t, "(h d) -> h d", h=n_heads)
    if kind == "out":
        return einops.rearrange(t, "m (h d) -> h d m", h=n_heads)
    if kind == "T":
        return t.T
    return t


def _strip(name: str, prefixes: tuple[str, ...]) -> str | None:
    for p in prefixes:
        if name.startswith(p):
            return name[len(p) :]
    return None


def convert_tensor(name: str, tensor: torch.Tensor, cfg: ModelConfig) -> tuple[str, torch.Tensor]:
    """One HF tensor -> ``(our_name, our_tensor)``.

    Raises :class:`WeightConversionError` for a key that belongs to no part of Qwen2-Audio
    or a layer index beyond the config's depth.
    """
    if name in _LM_HEAD:
        return "decoder.W_U_untied", tensor.T
    if (rest := _strip(name, _AUDIO_PREFIXES)) is not None:
        if rest in _ENC_STATIC:
            return _ENC_STATIC[rest], tensor
        m = _LAYER_RE.match(rest)
        if m and m.group(2) in _ENC_LAYER and int(m.group(1)) < cfg.encoder.n_layers:
            dst, kind = _ENC_LAYER[m.group(2)]
            return f"encoder.blocks.{m.group(1)}.{dst}", _transform(tensor, kind, cfg.encoder.n_heads)
    elif (rest := _strip(name, _PROJ_PREFIXES)) is not None:
        if rest == "linear.weight":
            return "projector.W", tensor.T
        if rest == "linear.bias":
            return "projector.b", tensor
    elif (rest := _strip(name, _LM_PREFIXES)) is not None:
        if rest == "embed_tokens.weight":
            return "decoder.W_E", tensor
        if rest == "norm.weight":
            return "decoder.ln_final.w", tensor
        m = _LAYER_RE.match(rest)
        if m and m.group(2) in _LM_LAYER and int(m.group(1)) < cfg.decoder.n_layers:
            dst, kind = _LM_LAYER[m.group(2)]
            heads = cfg.decoder.n_kv_heads if m.group(2) in _KV else cfg.decoder.n_heads
            return f"decoder.blocks.{m.group(1)}.{dst}", _transform(tensor, kind, heads)
    raise WeightConversionError(
        f"unexpected key {name!r} in the Qwen2-Audio checkpoint (config: {cfg.encoder.n_layers} audio layers, "
        f"{cfg.decoder.n_layers} language-model layers): is the config the checkpoint's own?"
    )


def iter_converted(
    items: Iterable[tuple[str, torch.Tensor]],
    cfg: ModelConfig,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Convert a stream of HF ``(name, tensor)`` pairs, casting and moving each as it goes."""
    for name, tensor in items:
        ours, t = convert_tensor(name, tensor, cfg)
        yield ours, t.to(device=device, dtype=dtype).contiguous()


__all__ = ["SPECIAL_TOKENS", "qwen2_audio_config_from_hf", "convert_tensor", "iter_converted"]
