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


def whisper_config_from_hf(hf_config: Any, generation_config: Any | None = None, name: str = "whisper") -> ModelConfig:
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
    # Each weight is copied once, straight into the memory layout the attention component
    # multiplies by (W_Q/W_K/W_V stored as [d_model, head, d_head], i.e. the HF weight
    # transposed; W_O contiguous): its load hooks then find nothing left to relayout.
    def split(w: torch.Tensor) -> torch.Tensor:  # "(h d) m -> h m d", stored as "m h d"
        return w.T.contiguous().view(w.shape[1], n_heads, -1).permute(1, 0, 2)

    out[f"{dst}.W_Q"] = split(sd.pop(f"{src}.q_proj.weight"))
    out[f"{dst}.b_Q"] = einops.rearrange(sd.pop(f"{src}.q_proj.bias"), "(h d) -> h d", h=n_heads)
    out[f"{dst}.W_K"] = split(sd.pop(f"{src}.k_proj.weight"))
    out[f"{dst}.W_V"] = split(sd.pop(f"{src}.v_proj.weight"))
    out[f"{dst}.b_V"] = einops.rearrange(sd.pop(f"{src}.v_proj.bias"), "(h d) -> h d", h=n_heads)
    w_o = sd.pop(f"{src}.out_proj.weight")  # "m (h d) -> h d m"
    out[f"{dst}.W_O"] = w_o.T.contiguous().view(n_heads, -1, w_o.shape[0])
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
    out[f"{dst}.mlp.W_in"] = sd.pop(f"{src}.fc1.weight").T.contiguous()
    out[f"{dst}.mlp.b_in"] = sd.pop(f"{src}.fc1.bias")
    out[f"{dst}.mlp.W_out"] = sd.pop(f"{src}.fc2.weight").T.contiguous()
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
        # Stored transposed (same [d_vocab, d_model] shape): the unembedding x W_E^T then reads
        # one contiguous matrix (see TextDecoder.relayout_unembed), at the cost of one copy here.
        out["decoder.W_E"] = sd.pop("decoder.embed_tokens.weight").T.contiguous().T
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
    # The layouts made above are the components' own; everything else is contiguous as read (no copy).
    laid_out = lambda k: k == "decoder.W_E" or k.endswith((".W_Q", ".W_K", ".W_V"))  # noqa: E731
    return {k: v if laid_out(k) else v.contiguous() for k, v in out.items()}


def expected_hf_whisper_shapes(hf_config: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face Whisper checkpoint of ``hf_config`` holds, by name (without
    the ``model.`` prefix; ``proj_out.weight`` is optional, tied to the embedding) and shape.

    Lets a loader compare a file's header with its config before reading any tensor: a
    declared size is only ever allocated when the config asks for exactly that tensor."""
    c = hf_config
    d, mels = int(c.d_model), int(c.num_mel_bins)
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (d, mels, 3),
        "encoder.conv1.bias": (d,),
        "encoder.conv2.weight": (d, d, 3),
        "encoder.conv2.bias": (d,),
        "encoder.embed_positions.weight": (int(c.max_source_positions), d),
        "encoder.layer_norm.weight": (d,),
        "encoder.layer_norm.bias": (d,),
        "decoder.embed_tokens.weight": (int(c.vocab_size), d),
        "decoder.embed_positions.weight": (int(c.max_target_positions), d),
        "decoder.layer_norm.weight": (d,),
        "decoder.layer_norm.bias": (d,),
    }
    for stack, n_layers, ffn in (
        ("encoder", c.encoder_layers, c.encoder_ffn_dim),
        ("decoder", c.decoder_layers, c.decoder_ffn_dim),
    ):
        for i in range(int(n_layers)):
            p = f"{stack}.layers.{i}"
            attns = ["self_attn"] + (["encoder_attn"] if stack == "decoder" else [])
            for a in attns:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    shapes[f"{p}.{a}.{proj}.weight"] = (d, d)
                    if proj != "k_proj":  # Whisper's k projection has no bias
                        shapes[f"{p}.{a}.{proj}.bias"] = (d,)
                shapes[f"{p}.{a}_layer_norm.weight"] = shapes[f"{p}.{a}_layer_norm.bias"] = (d,)
            shapes[f"{p}.final_layer_norm.weight"] = shapes[f"{p}.final_layer_norm.bias"] = (d,)
            shapes[f"{p}.fc1.weight"], shapes[f"{p}.fc1.bias"] = (int(ffn), d), (int(ffn),)
            shapes[f"{p}.fc2.weight"], shapes[f"{p}.fc2.bias"] = (d, int(ffn)), (d,)
    return shapes


__all__ = [
    "whisper_config_from_hf",
    "convert_hf_whisper_weights",
    "expected_hf_whisper_shapes",
    "WeightConversionError",
]
