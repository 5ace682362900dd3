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


def attention_module(model: Any, stack: str, layer: int, kind: str = "attn") -> Any:
    """The attention module of ``{stack}.blocks.{layer}.{kind}`` (``model.attention``, validated)."""
    return model.attention(stack, layer, kind)


def attention_kinds(model: Any, stack: str) -> list[str]:
    """The attention kinds ``stack`` has: ``["attn"]`` or ``["attn", "cross_attn"]`` (``model.attention_kinds``)."""
    return model.attention_kinds(stack)


def QK(model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None,
       head: int | None = None) -> FactoredMatrix:
    """``W_Q W_K^T``: ``[layer, head, d_model, d_model]``, or one layer's ``[head, ...]``, or one head's."""
    return _circuit(model, "W_Q", "W_K", stack, kind, layer, head, transpose_b=True)


def OV(model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None,
       head: int | None = None) -> FactoredMatrix:
    """``W_V W_O``: ``[layer, head, d_model, d_model]``, or one layer's ``[head, ...]``, or one head's."""
    return _circuit(model, "W_V", "W_O", stack, kind, layer, head, transpose_b=False)


def _circuit(model: Any, a: str, b: str, stack: str, kind: str, layer: int | None, head: int | None,
             transpose_b: bool) -> FactoredMatrix:
    if layer is None:
        A, B = model.stacked_attn_weight(a, stack, kind), model.stacked_attn_weight(b, stack, kind)
    else:
        A, B = model.attn_weight(a, stack, layer, kind), model.attn_weight(b, stack, layer, kind)
    if head is not None:
        n = A.shape[-3]
        if not 0 <= head < n:
            raise ValueError(f"head {head} does not exist: the {stack} {kind} has {n} heads (0-{n - 1})")
        A, B = A[..., head, :, :], B[..., head, :, :]
    return FactoredMatrix(A.detach(), (B.transpose(-1, -2) if transpose_b else B).detach())


@torch.no_grad()
def ov_through_unembed(
    model: Any, layer: int, head: int, kind: str = "attn", stack: str = "decoder",
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


__all__ = ["OV", "QK", "attention_kinds", "attention_module", "ov_through_unembed"]
