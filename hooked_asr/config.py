"""Configuration: one dataclass per stack, and a model config holding both.

The fields describe shapes and the few architectural switches that tell Whisper's and
Qwen2-Audio's stacks apart (norm type, positional scheme, MLP type, cross-attention,
grouped-query heads). Token ids needed to decode live in :class:`ModelConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass
class EncoderConfig:
    """The audio encoder: conv front end, pre-norm blocks, final norm.

    ``n_ctx`` is the number of frames after the stride-2 conv (1500 for 30 s of audio);
    the encoder therefore reads exactly ``2 * n_ctx`` mel frames. ``pool_stride > 0``
    adds Qwen2-Audio's average pooling after the blocks (``encoder.hook_pooled``).
    """

    n_mels: int = 80
    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 4
    d_mlp: int = 1536
    n_ctx: int = 1500
    ln_eps: float = 1e-5
    pool_stride: int = 0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_frames(self) -> int:
        """Mel frames the encoder reads (3000 for Whisper's 30 s window)."""
        return 2 * self.n_ctx


@dataclass
class DecoderConfig:
    """The text decoder.

    Whisper: LayerNorm, learned positions, GELU MLP, cross-attention, tied unembedding.
    Qwen2: RMSNorm, rotary positions, gated SiLU MLP, no cross-attention, grouped-query
    attention with biases on q/k/v, untied unembedding.
    """

    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 4
    d_mlp: int = 1536
    d_vocab: int = 51865
    n_ctx: int = 448
    ln_eps: float = 1e-5
    n_key_value_heads: int | None = None
    d_head_override: int | None = None
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    positional: Literal["learned", "rotary"] = "learned"
    rope_theta: float = 10000.0
    mlp: Literal["gelu", "gated_silu"] = "gelu"
    cross_attention: bool = True
    attn_k_bias: bool = False
    attn_o_bias: bool = True
    tie_unembed: bool = True

    @property
    def d_head(self) -> int:
        return self.d_head_override or self.d_model // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.n_key_value_heads or self.n_heads


class _LayerCount(int):
    """An int (the decoder's layers) that is also ``cfg.n_layers(stack)``, the per-stack count."""

    def __new__(cls, value: int, cfg: "ModelConfig") -> "_LayerCount":
        obj = super().__new__(cls, value)
        obj._cfg = cfg
        return obj

    def __call__(self, stack: str = "decoder") -> int:
        if stack not in ("encoder", "decoder"):
            raise ValueError(f"stack must be 'encoder' or 'decoder', got {stack!r}")
        return getattr(self._cfg, stack).n_layers


@dataclass
class ModelConfig:
    """A whole model: its two stacks and the token ids that drive decoding."""

    encoder: EncoderConfig
    decoder: DecoderConfig
    architecture: str = "whisper"
    name: str = "whisper"
    decoder_start_token_id: int = 50258
    eos_token_id: int = 50257
    pad_token_id: int | None = None
    no_timestamps_token_id: int | None = None
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    alignment_heads: list[list[int]] = field(default_factory=list)
    lang_to_id: dict[str, int] = field(default_factory=dict)
    task_to_id: dict[str, int] = field(default_factory=dict)
    is_multilingual: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    # Where the model's weights are and their dtype, as TransformerLens's cfg.device / cfg.dtype: set by
    # the model whenever it moves or casts (HookedEncoderDecoder._apply), never saved with the config.
    device: ClassVar[str] = "cpu"
    dtype: ClassVar[Any] = None

    # ---- TransformerLens's flat names, for the decoder (the stack that writes the logits) ----
    @property
    def n_layers(self) -> "_LayerCount":
        """The decoder's layer count (TransformerLens's ``cfg.n_layers``); still callable as
        ``cfg.n_layers("encoder")`` for either stack."""
        return _LayerCount(self.decoder.n_layers, self)

    d_model = property(lambda self: self.decoder.d_model, doc="decoder d_model (cfg.encoder.d_model for the encoder)")
    n_heads = property(lambda self: self.decoder.n_heads, doc="decoder attention heads")
    d_head = property(lambda self: self.decoder.d_head, doc="decoder head size")
    d_mlp = property(lambda self: self.decoder.d_mlp, doc="decoder MLP width")
    d_vocab = property(lambda self: self.decoder.d_vocab, doc="vocabulary size")
    d_vocab_out = property(lambda self: self.decoder.d_vocab, doc="vocabulary size (logits)")
    n_ctx = property(lambda self: self.decoder.n_ctx, doc="decoder context (tokens)")
    n_key_value_heads = property(lambda self: self.decoder.n_kv_heads, doc="decoder key/value heads")
    eps = property(lambda self: self.decoder.ln_eps, doc="decoder norm epsilon")
    normalization_type = property(
        lambda self: "LN" if self.decoder.norm == "layernorm" else "RMS", doc="'LN' or 'RMS' (TransformerLens spelling)"
    )
    act_fn = property(lambda self: "gelu" if self.decoder.mlp == "gelu" else "silu", doc="MLP activation")
    gated_mlp = property(lambda self: self.decoder.mlp == "gated_silu", doc="gated MLP (Qwen2)")
    positional_embedding_type = property(
        lambda self: "standard" if self.decoder.positional == "learned" else "rotary",
        doc="'standard' (learned) or 'rotary'",
    )
    attn_only = property(lambda self: False, doc="every block has an MLP")
    model_name = property(lambda self: self.name, doc="the model's name")
    original_architecture = property(lambda self: self.architecture, doc="'whisper' or 'qwen2_audio'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        enc = EncoderConfig(**d.pop("encoder"))
        dec = DecoderConfig(**d.pop("decoder"))
        return cls(encoder=enc, decoder=dec, **d)


__all__ = ["DecoderConfig", "EncoderConfig", "ModelConfig"]
