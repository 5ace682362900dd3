"""The text decoder: token (or merged audio+text) embeddings, causal blocks, final norm, unembedding.

x = W_E[tokens] (or inputs_embeds)  (+ W_pos[positions] when positions are learned)
x = blocks(x, encoder_out)           # causal self-attention, cross-attention if configured
logits = ln_final(x) W_U             # W_U = W_E^T when tied (Whisper)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.components.attention import KV, KVCache, RotaryEmbedding
from hooked_asr.components.blocks import Block
from hooked_asr.components.norm import LayerNorm, RMSNorm
from hooked_asr.components.products import product
from hooked_asr.config import DecoderConfig
from hooked_asr.hooks import HookPoint

# {"self": (k, v), "cross": (k, v)}, each [batch, kv_head, pos, d_head]; a decoding step's "self" is a KVCache
LayerCache = dict[str, KV]


def reorder_cache(
    past_kv: list[LayerCache], beam_idx: Int[torch.Tensor, "rows"], in_place: bool = False
) -> list[LayerCache]:
    """The cache of the rows ``beam_idx``: ``new[r] = old[beam_idx[r]]`` for every cached key and
    value (self- and cross-attention) of every layer, as beam search needs after each step.

    ``beam_idx`` may repeat or drop rows, so the result can hold more or fewer rows than the input.
    The input is not modified, except with ``in_place=True`` (for a caller that owns the cache and
    drops the old one, as beam search does): then a self-attention :class:`KVCache` that is its
    buffer's latest view and keeps its row count is reordered inside its buffer, copying only the
    rows whose source differs, so the next step appends in place instead of copying the whole past
    into a new buffer (same values either way).
    """
    if beam_idx.ndim != 1 or beam_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"beam_idx must be a 1-d integer tensor of row indices, got {beam_idx.dtype} {tuple(beam_idx.shape)}"
        )
    out: list[LayerCache] = []
    moved = None
    for layer in past_kv:
        new: LayerCache = {}
        for kind, kv in layer.items():
            idx = beam_idx.to(kv[0].device)
            if (
                in_place
                and isinstance(kv, KVCache)
                and kv.buffer.filled == kv.length
                and len(idx) == kv.buffer.k.shape[0]
            ):
                if moved is None:
                    moved = (idx != torch.arange(len(idx), device=idx.device)).nonzero()[:, 0]
                k, v = kv.buffer.k[:, :, : kv.length], kv.buffer.v[:, :, : kv.length]
                if len(moved):
                    src = idx[moved]
                    k.index_copy_(0, moved, k.index_select(0, src))
                    v.index_copy_(0, moved, v.index_select(0, src))
                new[kind] = kv
            else:
                k, v = kv
                new[kind] = (k.index_select(0, idx), v.index_select(0, idx))
        out.append(new)
    return out


class TextDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        # Tied: W_E is stored transposed ([d_model, d_vocab] in memory), so the unembedding
        # x W_E^T reads one contiguous matrix: at one token per step it is memory-bound and the
        # transposed read (F.linear's) is ~1.4-1.9x slower at batch 4-8. Costs no extra memory.
        # From 3 rows on, components.products runs oneDNN's linear on this same layout (faster there).
        self.W_E = nn.Parameter(
            torch.empty(cfg.d_model, cfg.d_vocab).T if cfg.tie_unembed else torch.empty(cfg.d_vocab, cfg.d_model)
        )
        if cfg.positional == "learned":
            self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
            self.hook_pos_embed = HookPoint(copy_input=True)  # a view of W_pos; [batch, pos, d_model]
            rotary = None
        else:
            rotary = RotaryEmbedding(cfg.d_head, cfg.rope_theta)
        self.blocks = nn.ModuleList(
            Block(
                cfg.d_model,
                cfg.n_heads,
                cfg.d_mlp,
                cfg.ln_eps,
                causal=True,
                cross_attention=cfg.cross_attention,
                norm=cfg.norm,
                mlp=cfg.mlp,
                n_kv_heads=cfg.n_kv_heads,
                d_head=cfg.d_head,
                k_bias=cfg.attn_k_bias,
                o_bias=cfg.attn_o_bias,
                rotary=rotary,
            )
            for _ in range(cfg.n_layers)
        )
        self.ln_final = (LayerNorm if cfg.norm == "layernorm" else RMSNorm)(cfg.d_model, cfg.ln_eps)
        if not cfg.tie_unembed:
            self.W_U_untied = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.hook_embed = HookPoint(copy_input=True)  # may be the caller's inputs_embeds; [batch, pos, d_model]
        self.hook_logits = HookPoint()  # [batch, pos, d_vocab]
        self._logits_at: list[int] | None = None  # see logits_only_at
        # load_state_dict(assign=True) puts the checkpoint's own (row-major) tensor in place.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.relayout_unembed())

    def relayout_unembed(self) -> None:
        """Store a tied ``W_E`` transposed in memory (same values, same ``[d_vocab, d_model]``
        shape), so that :meth:`unembed` reads ``W_U = W_E^T`` contiguously. Called after every
        ``load_state_dict``; call it after assigning a new ``W_E`` tensor by hand. Every stored
        layout: docs/architecture.md, "Weight layouts"."""
        W = self.W_E
        if not self.cfg.tie_unembed or W.is_meta or W.T.is_contiguous():
            return
        with torch.no_grad():
            self.W_E = nn.Parameter(W.detach().T.contiguous().T, requires_grad=W.requires_grad)

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        """The unembedding (``W_E^T`` for Whisper, whose output projection is tied)."""
        return self.W_E.T if self.cfg.tie_unembed else self.W_U_untied

    def unembed(self, x: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_vocab"]:
        """``x W_U``: the logits of an already-normalised residual (no ``ln_final`` here)."""
        # From 3 rows on, oneDNN's product (components.products): 8.8 against 12.7 ms at 5 rows on tiny.en
        # reuse: inside decoding the unembedding is read at every step; oneDNN's packed copy of it
        # gives the same bits twice as fast (components.products)
        return product(x, self.W_U, reuse=True)

    def forward(
        self,
        input_ids: Int[torch.Tensor, "batch pos"] | None = None,
        encoder_out: Float[torch.Tensor, "batch frame d_model"] | None = None,
        past_kv: list[LayerCache] | None = None,
        inputs_embeds: Float[torch.Tensor, "batch pos d_model"] | None = None,
        position_ids: Int[torch.Tensor, "batch pos"] | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Returns ``(logits [batch, pos, d_vocab], cache)``; with ``stop_at_layer=l`` the
        first item is instead the residual after ``l`` blocks (no final norm). Sharing a clean
        run's lower blocks is :func:`hooked_asr.models.runner.decode_from_prefix`."""
        x, position_ids = self.embed(input_ids, inputs_embeds, past_kv, position_ids)
        present: list[LayerCache] = []
        for i, block in enumerate(self.blocks[:stop_at_layer]):
            x, kv = block(
                x,
                encoder_out=encoder_out,
                past_kv=past_kv[i] if past_kv else None,
                position_ids=position_ids,
                attention_mask=attention_mask,
            )
            present.append(kv)
        if stop_at_layer is not None:
            return x, present
        return self.head(x), present

    @staticmethod
    def past_length(past_kv: list[LayerCache] | None) -> int:
        """Tokens already in the cache. A cache may hold only cross-attention keys/values (the
        encoder's, reused by a sweep whose patches leave them alone): then no token has been seen."""
        return next((c["self"][0].shape[2] for c in past_kv or () if "self" in c), 0)

    def embed(
        self,
        input_ids: Int[torch.Tensor, "batch pos"] | None,
        inputs_embeds: Float[torch.Tensor, "batch pos d_model"] | None = None,
        past_kv: list[LayerCache] | None = None,
        position_ids: Int[torch.Tensor, "batch pos"] | None = None,
    ) -> tuple[Float[torch.Tensor, "batch pos d_model"], Int[torch.Tensor, "batch pos"] | None]:
        """``x = W_E[tokens] (+ W_pos[positions])`` through ``hook_embed`` / ``hook_pos_embed``, and the
        rotary position ids (``None`` for learned positions), continuing after the cache."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            if input_ids.ndim != 2:
                raise ValueError(f"decoder input_ids must be [batch, pos], got shape {tuple(input_ids.shape)}")
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.cfg.d_vocab):
                raise ValueError(
                    f"token ids must lie in [0, {self.cfg.d_vocab - 1}] (the vocabulary), got "
                    f"[{int(input_ids.min())}, {int(input_ids.max())}]"
                )
            inputs_embeds = F.embedding(input_ids, self.W_E)
        batch, n_pos = inputs_embeds.shape[:2]
        past_len = self.past_length(past_kv)
        x = self.hook_embed(inputs_embeds)
        if self.cfg.positional == "learned":
            if past_len + n_pos > self.cfg.n_ctx:
                raise ValueError(
                    f"the decoder reads at most {self.cfg.n_ctx} tokens; got {past_len + n_pos} "
                    f"(cache {past_len} + new {n_pos}): lower max_new_tokens"
                )
            x = x + self.hook_pos_embed(self.W_pos[past_len : past_len + n_pos].expand(batch, -1, -1))
        elif position_ids is None:
            position_ids = torch.arange(past_len, past_len + n_pos, device=x.device).expand(batch, -1)
        return x, position_ids

    def head(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """``logits = ln_final(x) W_U`` through ``hook_logits`` (inside :meth:`logits_only_at`, with
        ``hook_logits`` not live: at those positions only)."""
        x = self.ln_final(x)
        if self._logits_at is not None and not self.hook_logits.is_live():
            x = x[:, self._logits_at]
        return self.hook_logits(self.unembed(x))

    @contextlib.contextmanager
    def logits_only_at(self, positions: Sequence[int]) -> Iterator[None]:
        """Within this block, a forward computes the logits at ``positions`` of the positions it runs
        (``[batch, len(positions), d_vocab]``) unless ``hook_logits`` is live (then at every position,
        as always, so a hook sees what it would see outside). Decoding reads the last position's
        logits (and the no-speech one at the first step); a prompt of 200 tokens over 5 beams would
        otherwise spend ~0.5 s (tiny.en, one thread) on 1000 rows of logits nobody reads."""
        old, self._logits_at = self._logits_at, list(positions)
        try:
            yield
        finally:
            self._logits_at = old


__all__ = ["LayerCache", "reorder_cache", "TextDecoder"]
