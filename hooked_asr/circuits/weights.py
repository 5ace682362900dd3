"""Weight-space views of attention: QK / OV circuits of any head, as TransformerLens's FactoredMatrix.

An attention kind is ``attn`` (self-attention, both stacks) or ``cross_attn`` (Whisper's
decoder: queries from the decoder stream, keys and values from the encoder output). The
stacked weights come from the model (``model.weights(stack, kind).W_Q`` ``[layer, head,
d_model, d_head]``, see :mod:`hooked_asr.models.tl_compat`). Per head ``h``, for row vectors::

    QK_h = W_Q[h] W_K[h]^T    [d_model, d_model]   score(x_q, y_k) = (x_q QK_h y_k^T + bias terms) / sqrt(d_head)
    OV_h = W_V[h] W_O[h]      [d_model, d_model]   head output for a value source y: y OV_h (+ b_V[h] W_O[h])

For cross-attention ``x_q`` is the decoder's normalised residual (``ln_cross``) and ``y`` the
encoder output (``encoder.hook_out``). With grouped-query attention (Qwen2-Audio's decoder)
query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``; the model's views repeat
key/value heads so every index is a query head. Nothing ``d_model x d_model`` is materialised.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from transformer_lens.FactoredMatrix import FactoredMatrix


def QK(
    model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None, head: int | None = None
) -> FactoredMatrix:
    """``W_Q W_K^T``: ``[layer, head, d_model, d_model]``, or one layer's ``[head, ...]``, or one head's
    (``model.weights(stack, kind).circuit("QK", layer, head)``, where it is built)."""
    return model.weights(stack, kind).circuit("QK", layer, head)


def OV(
    model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None, head: int | None = None
) -> FactoredMatrix:
    """``W_V W_O``: ``[layer, head, d_model, d_model]``, or one layer's ``[head, ...]``, or one head's
    (``model.weights(stack, kind).circuit("OV", layer, head)``, where it is built)."""
    return model.weights(stack, kind).circuit("OV", layer, head)


@torch.no_grad()
def ov_through_unembed(
    model: Any,
    layer: int,
    head: int,
    kind: str = "attn",
    stack: str = "decoder",
    source: Float[torch.Tensor, "n d_model"] | None = None,
) -> Float[torch.Tensor, "n d_vocab"]:
    """A head's OV circuit read through the unembedding: ``source OV_h W_U``.

    ``source`` defaults to the token embeddings ``W_E`` (TransformerLens's full ``E OV U``
    circuit, ``[d_vocab, d_vocab]``: pass a subset of rows for a big vocabulary). For a
    cross-attention head pass encoder frames (``encoder.hook_out[0]``): row ``f`` is what
    attending to frame ``f`` alone writes towards each token. Neither the head's input norm
    nor ``ln_final`` is applied (their scales depend on the whole residual stream).
    """
    ov = OV(model, stack, kind, layer, head)
    src = model.W_E if source is None else source
    return (src.to(ov.A.dtype) @ ov.A) @ (ov.B @ model.W_U)


__all__ = ["OV", "QK", "ov_through_unembed"]
