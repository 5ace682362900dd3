"""Hugging Face Whisper -> hooked Whisper: config and weights.

HF stores ``Linear`` weights as ``[out, in]``; we store TransformerLens's head-explicit
layout, so q/k/v weights are ``rearrange("(h d) m -> h m d")`` and the output projection
``rearrange("m (h d) -> h d m")``; MLP weights are transposed to ``[in, out]``.
Every key and shape is checked: a missing, unexpected or misshapen tensor raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import einops
import torch

from hooked_asr.config import DecoderConfig, EncoderConfig, ModelConfig


class WeightConversionError(ValueError):
    """A checkpoint does not match the architecture it claims."""


def config_from_hf(hf_config: Any, generation_config: Any | None = None, name: str = "whisper") -> ModelConfig:
    """Build a :class:`ModelConfig` from a ``transformers.WhisperConfig`` (and its generation config)."""
    c = hf_config
    if getattr(c, "encoder_attention_heads", None) is None:
        raise WeightConversionError(f"not a Whisper config (no encoder_attention_heads): {type(c).__name__}")
    if getattr(c, "scale_embedding", False):
        raise WeightConversionError("scale_embedding=True is not a Whisper checkpoint setting we support")
    enc = EncoderConfig(
        n_mels=c.num_mel_bins,
        d_model=c.d_model,
        n_heads=c.encoder_attention_heads,
        n_layers=c.encoder_layers,
        d_mlp=c.encoder_ffn_dim,
        n_ctx=c.max_source_positions,
    )
    dec = DecoderConfig(
        d_model=c.d_model,
        n_heads=c.decoder_attention_heads,
        n_layers=c.decoder_layers,
        d_mlp=c.decoder_ffn_dim,
        d_vocab=c.vocab_size,
        n_ctx=c.max_target_positions,
    )
    g = generation_config
    gget = (lambda k, d=None: getattr(g, k, d)) if g is not None else (lambda k, d=None: d)
    suppress = gget("suppress_tokens") or getattr(c, "suppress_tokens", None) or []
    begin = gget("begin_suppress_tokens") or getattr(c, "begin_suppress_tokens", None) or []
    return ModelConfig(
        encoder=enc,
        decoder=dec,
        architecture="whisper",
        name=name,
        decoder_start_token_id=c.decoder_start_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
        no_timestamps_token_id=gget("no_timestamps_token_id"),
        suppress_tokens=list(suppress),
        begin_suppress_tokens=list(begin),
        alignment_heads=[list(h) for h in (gget("alignment_heads") or [])],
        lang_to_id=dict(gget("lang_to_id") or {}),
        task_to_id=dict(gget("task_to_id") or {}),
        is_multilingual=bool(gget("is_multilingual", c.vocab_size >= 51865)),
    )


def _attn(sd: dict, src: str, dst: str, n_heads: int, out: dict) -> None:
    split = lambda w: einops.rearrange(w, "(h d) m -> h m d", h=n_heads)  # noqa: E731
    out[f"{dst}.W_Q"] = split(sd.pop(f"{src}.q_proj.weight"))
    out[f"{dst}.b_Q"] = einops.rearrange(sd.pop(f"{src}.q_proj.bias"), "(h d) -> h d", h=n_heads)
    out[f"{dst}.W_K"] = split(sd.pop(f"{src}.k_proj.weight"))
    out[f"{dst}.W_V"] = split(sd.pop(f"{src}.v_proj.weight"))
    out[f"{dst}.b_V"] = einops.rearrange(sd.pop(f"{src}.v_proj.bias"), "(h d) -> h d", h=n_heads)
    out[f"{dst}.W_O"] = einops.rearrange(sd.pop(f"{src}.out_proj.weight"), "m (h d) -> h d m", h=n_heads)
    out[f"{dst}.b_O"] = sd.pop(f"{src}.out_proj.bias")


def _block(sd: dict, src: str, dst: str, n_heads: int, out: dict, cross: bool) -> None:
    for hf_ln, our_ln in [("self_attn_layer_norm", "ln1"), ("final_layer_norm", "ln2")] + (
        [("encoder_attn_layer_norm", "ln_cross")] if cross else []
    ):
        out[f"{dst}.{our_ln}.w"] = sd.pop(f"{src}.{hf_ln}.weight")
        out[f"{dst}.{our_ln}.b"] = sd.pop(f"{src}.{hf_ln}.bias")
    _attn(sd, f"{src}.self_attn", f"{dst}.attn", n_heads, out)
    if cross:
        _attn(sd, f"{src}.encoder_attn", f"{dst}.cross_attn", n_heads, out)
    out[f"{dst}.mlp.W_in"] = sd.pop(f"{src}.fc1.weight").T
    out[f"{dst}.mlp.b_in"] = sd.pop(f"{src}.fc1.bias")
    out[f"{dst}.mlp.W_out"] = sd.pop(f"{src}.fc2.weight").T
    out[f"{dst}.mlp.b_out"] = sd.pop(f"{src}.fc2.bias")


def convert_hf_whisper_weights(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Convert a ``WhisperForConditionalGeneration`` / ``WhisperModel`` state dict to ours.

    Raises :class:`WeightConversionError` naming every missing or unused key.
    """
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    proj_out = sd.pop("proj_out.weight", None)
    out: dict[str, torch.Tensor] = {}
    try:
        out["encoder.conv1.weight"] = sd.pop("encoder.conv1.weight")
        out["encoder.conv1.bias"] = sd.pop("encoder.conv1.bias")
        out["encoder.conv2.weight"] = sd.pop("encoder.conv2.weight")
        out["encoder.conv2.bias"] = sd.pop("encoder.conv2.bias")
        out["encoder.W_pos"] = sd.pop("encoder.embed_positions.weight")
        for i in range(cfg.encoder.n_layers):
            _block(sd, f"encoder.layers.{i}", f"encoder.blocks.{i}", cfg.encoder.n_heads, out, cross=False)
        out["encoder.ln_final.w"] = sd.pop("encoder.layer_norm.weight")
        out["encoder.ln_final.b"] = sd.pop("encoder.layer_norm.bias")
        out["decoder.W_E"] = sd.pop("decoder.embed_tokens.weight")
        out["decoder.W_pos"] = sd.pop("decoder.embed_positions.weight")
        for i in range(cfg.decoder.n_layers):
            _block(sd, f"decoder.layers.{i}", f"decoder.blocks.{i}", cfg.decoder.n_heads, out, cross=True)
        out["decoder.ln_final.w"] = sd.pop("decoder.layer_norm.weight")
        out["decoder.ln_final.b"] = sd.pop("decoder.layer_norm.bias")
    except KeyError as e:
        raise WeightConversionError(
            f"checkpoint lacks {e.args[0]!r} (expected a Whisper with {cfg.encoder.n_layers} encoder and "
            f"{cfg.decoder.n_layers} decoder layers): is the checkpoint complete and the config its own?"
        ) from None
    leftover = sorted(sd)
    if leftover:
        raise WeightConversionError(f"unexpected keys in the Whisper checkpoint: {leftover[:10]}")
    if proj_out is not None and not torch.equal(proj_out, out["decoder.W_E"]):
        raise WeightConversionError("proj_out.weight differs from decoder.embed_tokens.weight; Whisper ties them")
    return {k: v.contiguous() for k, v in out.items()}


__all__ = ["config_from_hf", "convert_hf_whisper_weights", "WeightConversionError"]
