"""Runs that start part-way through a model: speed beside the maths, not inside it.

The components' ``forward`` methods are the block equations. A patching sweep recomputes only
what a patch changes, and this module is where such partial runs are written, once, over the
components' public pieces (``Block.after_attention``, ``Attention.from_z``, ``TextDecoder.embed``
/ ``head``, ``AudioEncoder.forward(start_at_layer=)``):

* :func:`encode_from` resumes the encoder inside block ``l``, at ``attn.hook_z``: the block's
  attention is not recomputed, so a patch of a head (or of anything after the attention) reruns
  only what it changes::

      resid_mid_l = resid_pre_l + sum_h z_h W_O[h] + b_O       then block l's rest, blocks l+1..

* :func:`decode_from_prefix` shares a clean run's lower decoder blocks between rows
  (:mod:`hooked_asr.models.decoding.prefix`): rows whose tokens are still the clean ones enter
  block ``l`` with the clean ``decoder.blocks.{l}.hook_resid_pre``; the others run blocks
  ``0..l-1`` themselves.

Both give the numbers of the full run (``tests/models/test_encoder_resume.py``,
``tests/models/decoding/test_prefix_sharing.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.components.audio_encoder import AudioEncoder
from hooked_asr.components.decoder import LayerCache, TextDecoder


def encode_from(
    encoder: AudioEncoder,
    resid: Float[torch.Tensor, "batch frame d_model"],
    start_at_layer: int | None,
    attn_z: Float[torch.Tensor, "batch frame head d_head"] | None = None,
    attention_mask: torch.Tensor | None = None,
    stop_at_layer: int | None = None,
) -> Float[torch.Tensor, "batch frame d_model"]:
    """The encoder from ``encoder.blocks.{l}.hook_resid_pre`` (``l = start_at_layer``) or, with
    ``attn_z`` (block ``l``'s ``attn.hook_z`` of the run that gave ``resid``), from inside block ``l``
    after its attention: block ``l``'s hooks before ``hook_z`` do not fire. With neither, the
    encoder from its features (``resid`` is then ``input_features``)."""
    if attn_z is None:
        return encoder(resid, attention_mask=attention_mask, stop_at_layer=stop_at_layer, start_at_layer=start_at_layer)
    n = encoder.cfg.n_layers
    if start_at_layer is None or not 0 <= start_at_layer < n or tuple(attn_z.shape[:2]) != tuple(resid.shape[:2]):
        raise ValueError(
            f"attn_z is block l's attn.hook_z [batch, {encoder.cfg.n_ctx}, head, d_head] for start_at_layer=l in "
            f"0..{n - 1}; got start_at_layer={start_at_layer}, attn_z {tuple(attn_z.shape)}"
        )
    encoder.check_resid(resid, start_at_layer)
    if stop_at_layer is not None and stop_at_layer <= start_at_layer:
        return resid  # no block runs (as encoder(resid, start_at_layer=l, stop_at_layer<=l))
    block = encoder.blocks[start_at_layer]
    x, _ = block.after_attention(resid, block.attn.from_z(attn_z))
    return encoder(x, attention_mask=attention_mask, stop_at_layer=stop_at_layer, start_at_layer=start_at_layer + 1)


def decode_from_prefix(
    decoder: TextDecoder,
    input_ids: Int[torch.Tensor, "batch pos"],
    encoder_out: Float[torch.Tensor, "batch frame d_model"] | None,
    past_kv: list[LayerCache] | None,
    start_at_layer: int | None = None,
    resid_pre: Float[torch.Tensor, "batch pos d_model"] | None = None,
    run_rows: Int[torch.Tensor, " run"] | None = None,
    stop_at_layer: int | None = None,
) -> tuple[torch.Tensor, list[LayerCache]]:
    """``TextDecoder.forward`` where rows share a clean prefix below block ``l = start_at_layer``.

    Every row is embedded (the embedding hooks fire on all rows); rows ``run_rows`` (default: all)
    run blocks ``0..l-1`` from their embedding, with ``past_kv[i]`` (``i < l``) holding *their*
    cache only, in that order; every other row enters block ``l`` with ``resid_pre`` (the clean
    run's ``decoder.blocks.{l}.hook_resid_pre`` at these positions). Blocks ``l..`` run on every
    row. The returned cache has the same layout (``{}`` for blocks ``< l`` when no row ran them).
    """
    x, position_ids = decoder.embed(input_ids, None, past_kv)
    lo = start_at_layer or 0
    present: list[LayerCache] = []
    if lo:
        x, present = _lower_blocks(decoder, x, lo, input_ids, encoder_out, past_kv, position_ids, resid_pre, run_rows)
    for i, block in enumerate(decoder.blocks[lo:stop_at_layer], start=lo):
        x, kv = block(x, encoder_out=encoder_out, past_kv=past_kv[i] if past_kv else None, position_ids=position_ids)
        present.append(kv)
    if stop_at_layer is not None:
        return x, present
    return decoder.head(x), present


def _lower_blocks(
    decoder: TextDecoder,
    x: torch.Tensor,
    lo: int,
    input_ids: torch.Tensor,
    encoder_out: torch.Tensor | None,
    past_kv: list[LayerCache] | None,
    position_ids: torch.Tensor | None,
    resid_pre: torch.Tensor | None,
    run_rows: torch.Tensor | None,
) -> tuple[torch.Tensor, list[LayerCache]]:
    """Blocks ``0..lo-1`` on rows ``run_rows`` only; the other rows take ``resid_pre``."""
    batch = x.shape[0]
    rows = torch.arange(batch, device=x.device) if run_rows is None else run_rows.to(x.device)
    if resid_pre is None and rows.numel() != batch:
        raise ValueError(
            f"start_at_layer={lo} with {rows.numel()} of {batch} rows in run_rows needs resid_pre "
            "(the residual entering that block) for the others"
        )
    learned = decoder.cfg.positional == "learned"
    embed_hooks = [decoder.hook_embed] + ([decoder.hook_pos_embed] if learned else [])
    if resid_pre is not None and any(h.is_live() for h in embed_hooks):
        # rows that skip blocks < lo must enter with the clean residual: their embedding must be the plain one
        past_len = decoder.past_length(past_kv)
        plain = F.embedding(input_ids, decoder.W_E)
        if learned:
            plain = plain + decoder.W_pos[past_len : past_len + x.shape[1]]
        keep = torch.ones(batch, dtype=torch.bool, device=x.device)
        keep[rows] = False
        if not torch.equal(x[keep], plain.expand_as(x)[keep]):
            raise ValueError(
                "a hook on decoder.hook_embed / hook_pos_embed changed a row that skips blocks "
                f"< {lo} (start_at_layer): patch embeddings with model.generate"
            )
    present: list[LayerCache] = []
    if rows.numel() == 0:  # dense: a hook may write into it
        return resid_pre.contiguous(), [{} for _ in range(lo)]

    def sub(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        return t[:1].expand(rows.numel(), *t.shape[1:]) if t.stride(0) == 0 else t.index_select(0, rows)

    need_enc = encoder_out is not None and any("cross" not in (past_kv[i] if past_kv else {}) for i in range(lo))
    xs, enc = x.index_select(0, rows), sub(encoder_out) if need_enc else None
    pos = sub(position_ids)
    for i, block in enumerate(decoder.blocks[:lo]):
        xs, kv = block(xs, encoder_out=enc, past_kv=past_kv[i] if past_kv else None, position_ids=pos)
        present.append(kv)
    base = x if resid_pre is None else resid_pre
    return base.index_copy(0, rows, xs), present


__all__ = ["decode_from_prefix", "encode_from"]
