"""Weight-space views of attention: stacked ``W_Q, W_K, W_V, W_O`` and per-head QK / OV circuits.

An attention kind is ``attn`` (self-attention, both stacks) or ``cross_attn`` (Whisper's
decoder: queries from the decoder stream, keys and values from the encoder output). Weights
are in TransformerLens's head-explicit layout::

    W_Q, W_K, W_V: [head, d_model, d_head]      W_O: [head, d_head, d_model]

Per head ``h`` (TransformerLens's definitions, for row vectors ``x``)::

    QK_h = W_Q[h] W_K[h]^T    [d_model, d_model]   score(x_q, y_k) = x_q QK_h y_k^T / sqrt(d_head)
    OV_h = W_V[h] W_O[h]      [d_model, d_model]   head output for a value source y: y OV_h

For cross-attention ``x_q`` is the decoder's normalised residual and ``y`` the encoder output
(``encoder.hook_out``). With grouped-query attention (Qwen2-Audio's decoder) query head ``h``
reads key/value head ``h // (n_heads // n_kv_heads)``; :func:`stacked_weight` repeats the
key/value heads so every view is per query head. Circuits are returned as TransformerLens's
:class:`~transformer_lens.FactoredMatrix` (nothing ``d_model x d_model`` is materialised).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from transformer_lens.FactoredMatrix import FactoredMatrix

AttnKind = Literal["attn", "cross_attn"]
WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")


def attention_module(model: Any, stack: str, layer: int, kind: str = "attn") -> Any:
    """The attention module whose hooks are ``{stack}.blocks.{layer}.{kind}.hook_*``.

    Raises ``ValueError`` naming what exists when the model has no such attention.
    """
    if kind not in ("attn", "cross_attn"):
        raise ValueError(f"attention kind must be 'attn' or 'cross_attn', got {kind!r}")
    n = model.n_layers.get(stack)
    if n is None:
        raise ValueError(f"unknown stack {stack!r}; this model has {sorted(model.n_layers)}")
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} does not exist: the {stack} has {n} blocks (0-{n - 1})")
    name = f"{stack}.blocks.{layer}.{kind}"
    if f"{name}.hook_z" not in model.hook_dict:
        raise ValueError(f"the {stack} of this model has no {kind!r} attention ({name}); kinds: {attention_kinds(model, stack)}")
    return model.get_submodule(name)


def attention_kinds(model: Any, stack: str) -> list[str]:
    """The attention kinds a stack has: ``["attn"]`` or ``["attn", "cross_attn"]``."""
    return [k for k in ("attn", "cross_attn") if f"{stack}.blocks.0.{k}.hook_z" in model.hook_dict]


def stacked_weight(model: Any, name: str, stack: str = "decoder", kind: str = "attn") -> torch.Tensor:
    """One attention weight of every layer, stacked: ``W_Q -> [layer, head, d_model, d_head]``.

    Key/value weights of grouped-query attention are repeated to one per query head, so
    index ``[l, h]`` is always query head ``h``'s. Biases a model lacks (Whisper's ``b_K``)
    are zeros, so the formulas above hold for every model.
    """
    if name not in WEIGHTS:
        raise ValueError(f"unknown attention weight {name!r}; one of {list(WEIGHTS)}")
    return torch.stack([_head_weight(attention_module(model, stack, l, kind), name)
                        for l in range(model.n_layers[stack])])


def _head_weight(attn: Any, name: str) -> torch.Tensor:
    w = getattr(attn, name)
    if w is None:  # a bias this architecture lacks (Whisper's b_K, Qwen2's b_O)
        shape = (attn.n_kv_heads, attn.d_head) if name == "b_K" else (attn.W_O.shape[-1],)
        w = torch.zeros(shape, dtype=attn.W_O.dtype, device=attn.W_O.device)
    if name in ("W_K", "W_V", "b_K", "b_V") and attn.n_kv_heads != attn.n_heads:
        w = w.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=0)
    return w


def head_weight(model: Any, name: str, stack: str, layer: int, kind: str = "attn") -> torch.Tensor:
    """One layer's weight ``[head, ...]`` (key/value heads repeated per query head)."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown attention weight {name!r}; one of {list(WEIGHTS)}")
    return _head_weight(attention_module(model, stack, layer, kind), name)


def QK(model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None,
       head: int | None = None) -> FactoredMatrix:
    """``W_Q W_K^T`` as a FactoredMatrix: ``[layer, head, d_model, d_model]`` (or one layer / head)."""
    return _circuit(model, "W_Q", "W_K", stack, kind, layer, head, transpose_b=True)


def OV(model: Any, stack: str = "decoder", kind: str = "attn", layer: int | None = None,
       head: int | None = None) -> FactoredMatrix:
    """``W_V W_O`` as a FactoredMatrix: ``[layer, head, d_model, d_model]`` (or one layer / head)."""
    return _circuit(model, "W_V", "W_O", stack, kind, layer, head, transpose_b=False)


def _circuit(model: Any, a: str, b: str, stack: str, kind: str, layer: int | None, head: int | None,
             transpose_b: bool) -> FactoredMatrix:
    if layer is None:
        A, B = stacked_weight(model, a, stack, kind), stacked_weight(model, b, stack, kind)
    else:
        A, B = head_weight(model, a, stack, layer, kind), head_weight(model, b, stack, layer, kind)
    if head is not None:
        n = A.shape[-3]
        if not 0 <= head < n:
            raise ValueError(f"head {head} does not exist: the {stack} {kind} has {n} heads (0-{n - 1})")
        A, B = A[..., head, :, :], B[..., head, :, :]
    return FactoredMatrix(A.detach(), (B.transpose(-1, -2) if transpose_b else B).detach())


def ov_through_unembed(
    model: Any, layer: int, head: int, kind: str = "attn", stack: str = "decoder",
    source: Float[torch.Tensor, "n d_model"] | None = None,
) -> Float[torch.Tensor, "n d_vocab"]:
    """A head's OV circuit read through the unembedding: ``source OV_h W_U``.

    ``source`` defaults to the token embeddings ``W_E`` (the full ``E OV U`` circuit of
    TransformerLens; ``[d_vocab, d_vocab]``, so pass a subset of rows for a big vocabulary).
    For a cross-attention head pass encoder frames (``encoder.hook_out[0]``). The final
    LayerNorm is not applied (its scale depends on the whole residual stream).
    """
    ov = OV(model, stack, kind, layer, head)
    src = model.decoder.W_E if source is None else source
    return (src @ ov.A) @ (ov.B @ model.decoder.W_U)


__all__ = ["AttnKind", "OV", "QK", "WEIGHTS", "attention_kinds", "attention_module", "head_weight",
           "ov_through_unembed", "stacked_weight"]
