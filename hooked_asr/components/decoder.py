"""The text decoder: token (or merged audio+text) embeddings, causal blocks, final norm, unembedding.

    x = W_E[tokens] (or inputs_embeds)  (+ W_pos[positions] when positions are learned)
    x = blocks(x, encoder_out)           # causal self-attention, cross-attention if configured
    logits = ln_final(x) W_U             # W_U = W_E^T when tied (Whisper)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.components.attention import KV, RotaryEmbedding
from hooked_asr.components.blocks import Block
from hooked_asr.components.norm import LayerNorm, RMSNorm
from hooked_asr.config import DecoderConfig
from hooked_asr.hooks import HookPoint

LayerCache = dict[str, KV]  # {"self": (k, v), "cross": (k, v)}, each [batch, kv_head, pos, d_head]


def reorder_cache(past_kv: list[LayerCache], beam_idx: Int[torch.Tensor, "rows"]) -> list[LayerCache]:
    """The cache of the rows ``beam_idx``: ``new[r] = old[beam_idx[r]]`` for every cached key and
    value (self- and cross-attention) of every layer, as beam search needs after each step.

    ``beam_idx`` may repeat or drop rows, so the result can hold more or fewer rows than the input.
    The input is not modified.
    """
    if beam_idx.ndim != 1 or beam_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"beam_idx must be a 1-d integer tensor of row indices, got {beam_idx.dtype} {tuple(beam_idx.shape)}")
    out: list[LayerCache] = []
    for layer in past_kv:
        new: LayerCache = {}
        for kind, (k, v) in layer.items():
            idx = beam_idx.to(k.device)
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
        self.W_E = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab).T if cfg.tie_unembed else torch.empty(cfg.d_vocab, cfg.d_model))
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
        # load_state_dict(assign=True) puts the checkpoint's own (row-major) tensor in place.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.relayout_unembed())

    def relayout_unembed(self) -> None:
        """Store a tied ``W_E`` transposed in memory (same values, same ``[d_vocab, d_model]``
        shape), so that :meth:`unembed` reads ``W_U = W_E^T`` contiguously. Called after every
        ``load_state_dict``; call it after assigning a new ``W_E`` tensor by hand."""
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
        return x @ self.W_U

    def forward(
        self,
        input_ids: Int[torch.Tensor, "batch pos"] | None = None,
        encoder_out: Float[torch.Tensor, "batch frame d_model"] | None = None,
        past_kv: list[LayerCache] | None = None,
        inputs_embeds: Float[torch.Tensor, "batch pos d_model"] | None = None,
        position_ids: Int[torch.Tensor, "batch pos"] | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        resid_pre: Float[torch.Tensor, "batch pos d_model"] | None = None,
        run_rows: Int[torch.Tensor, "run"] | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Returns ``(logits [batch, pos, d_vocab], cache)``; with ``stop_at_layer=l`` the
        first item is instead the residual after ``l`` blocks (no final norm).

        ``start_at_layer=l`` (prefix sharing, :mod:`hooked_asr.models.decoding.prefix`): every row
        is embedded (the embedding hooks fire on all rows), rows ``run_rows`` (default: all) run
        blocks ``0..l-1`` from their embedding, with ``past_kv[i]`` (``i < l``) holding *their*
        cache only, in that order; every other row enters block ``l`` with ``resid_pre`` (the clean
        run's ``decoder.blocks.{l}.hook_resid_pre`` at these positions). Blocks ``l..`` run on every
        row. The returned cache has the same layout (``{}`` for blocks ``< l`` when no row ran them).
        """
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
        # A cache may hold only cross-attention keys/values (the encoder's, reused by a sweep
        # whose patches leave them alone): then no token has been seen yet.
        past_len = next((c["self"][0].shape[2] for c in past_kv or () if "self" in c), 0)
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
        present: list[LayerCache] = []
        lo = start_at_layer or 0
        if lo:
            x, present = self._lower_blocks(x, lo, past_len, inputs_embeds, encoder_out, past_kv, position_ids,
                                            attention_mask, resid_pre, run_rows)
        for i, block in enumerate(self.blocks[lo:stop_at_layer], start=lo):
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
        return self.hook_logits(self.unembed(self.ln_final(x))), present

    def _lower_blocks(
        self, x: torch.Tensor, lo: int, past_len: int, inputs_embeds: torch.Tensor, encoder_out: torch.Tensor | None,
        past_kv: list[LayerCache] | None, position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
        resid_pre: torch.Tensor | None, run_rows: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Blocks ``0..lo-1`` on rows ``run_rows`` only; the other rows take ``resid_pre``."""
        batch = x.shape[0]
        rows = torch.arange(batch, device=x.device) if run_rows is None else run_rows.to(x.device)
        if resid_pre is None and rows.numel() != batch:
            raise ValueError(f"start_at_layer={lo} with {rows.numel()} of {batch} rows in run_rows needs resid_pre "
                             "(the residual entering that block) for the others")
        embed_hooks = [self.hook_embed] + ([self.hook_pos_embed] if self.cfg.positional == "learned" else [])
        if resid_pre is not None and any(h.is_live() for h in embed_hooks):
            # rows that skip blocks < lo must enter with the clean residual: their embedding must be the plain one
            plain = inputs_embeds if self.cfg.positional != "learned" else inputs_embeds + self.W_pos[
                past_len : past_len + x.shape[1]]
            keep = torch.ones(batch, dtype=torch.bool, device=x.device)
            keep[rows] = False
            if not torch.equal(x[keep], plain.expand_as(x)[keep]):
                raise ValueError("a hook on decoder.hook_embed / hook_pos_embed changed a row that skips blocks "
                                 f"< {lo} (start_at_layer): patch embeddings without clean_prefix")
        present: list[LayerCache] = []
        if rows.numel() == 0:  # dense: a hook may write into it
            return resid_pre.contiguous(), [{} for _ in range(lo)]

        def sub(t):
            if t is None:
                return None
            return t[:1].expand(rows.numel(), *t.shape[1:]) if t.stride(0) == 0 else t.index_select(0, rows)

        need_enc = encoder_out is not None and any("cross" not in (past_kv[i] if past_kv else {}) for i in range(lo))
        xs, enc = x.index_select(0, rows), sub(encoder_out) if need_enc else None
        pos, mask = sub(position_ids), sub(attention_mask)
        for i, block in enumerate(self.blocks[:lo]):
            xs, kv = block(xs, encoder_out=enc, past_kv=past_kv[i] if past_kv else None, position_ids=pos,
                           attention_mask=mask)
            present.append(kv)
        base = x if resid_pre is None else resid_pre
        return base.index_copy(0, rows, xs), present


__all__ = ["LayerCache", "reorder_cache", "TextDecoder"]
