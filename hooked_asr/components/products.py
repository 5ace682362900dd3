"""The components' one weight product, ``y = x W (+ b)`` with ``W`` stored ``[in, out]``.

From 3 rows on (beams, a batch, a prompt, an encoder window) a float32 product on the CPU runs
as oneDNN's inference linear on the same weight (a transposed view, no copy): MKL's GEMM on an
``[in, out]`` matrix with few rows costs about one vector-matrix product per row, oneDNN reads
the matrix once for all rows. Measured on tiny.en's shapes, one thread, microseconds:

    rows x in x out       MKL addmm   oneDNN
    5 x 384 x 1536         168         79      (a beam-5 step's MLP)
    5 x 1536 x 384         142         78
    5 x 384 x 51864        12700       8800    (a beam-5 step's unembedding)
    1500 x 384 x 1536      19300       17400   (an encoder MLP)
    1 x 384 x 1536         44          58      (greedy: MKL's vector-matrix product stays)

Only inside :func:`decoding_products` (``generate`` runs in it: encoder, prompt and every step):
analyses compare teacher-forced runs bit for bit (a patched run against the clean one, a path
patched from noise that must equal the clean value exactly), and those runs keep ``addmm`` so that
a product over a subset of rows gives the same bits as over all of them.

The values agree with MKL's to float32 rounding (~1e-6 relative). The kernel does not depend on
the grad mode: a product that autograd records runs the same oneDNN forward (its backward is the
usual matrix products), so a run with gradients and one without give the same activations bit
for bit (attribution patching relies on it). A weight that is a tensor subclass with a
``weight_product(x, b)`` method (the int8 path's ``Int8Weight``, which runs its own kernel) is asked
first (``None``: it declines); other subclasses, dtypes or devices take ``torch.addmm`` / ``@``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import nn

ONEDNN_MIN_ROWS = 3
PACK_AFTER = 8  # a reused weight is packed at its 8th product in a block: a short run never pays the packing
_DECODING: contextvars.ContextVar[bool] = contextvars.ContextVar("hooked_asr_decoding_products", default=False)
# weight key -> [weight, version, products so far, packed weight or None]; see _packed
_PACKS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hooked_asr_product_packs", default=None)


@contextlib.contextmanager
def decoding_products() -> Iterator[None]:
    """Within this block (and as a decorator, within the call) :func:`product` may run oneDNN's kernel
    (see the module docstring); outside it always runs ``addmm`` / ``@``. Packed weights
    (``product(..., reuse=True)``) live until the block ends, or until an enclosing
    :func:`keep_packed_weights` block ends."""
    token = _DECODING.set(True)
    try:
        with keep_packed_weights():
            yield
    finally:
        _DECODING.reset(token)


@contextlib.contextmanager
def keep_packed_weights() -> Iterator[None]:
    """Weights packed by the :func:`decoding_products` blocks inside this one are kept until it ends
    (long-form transcription: the unembedding is packed once, not once per window). Enables nothing
    by itself: outside ``decoding_products`` products still run ``addmm``."""
    packs = _PACKS.set({}) if _PACKS.get() is None else None
    try:
        yield
    finally:
        if packs is not None:
            _PACKS.reset(packs)


_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_HAS_ONEDNN_PACK = _HAS_ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
PLAIN_TENSORS = (torch.Tensor, nn.Parameter)  # a weight of another type is a subclass (the int8 path's)


def onednn_product(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> bool:
    """Whether ``x @ W + b`` may run as oneDNN's linear (see the module docstring)."""
    return (
        _HAS_ONEDNN_LINEAR
        and _DECODING.get()
        and type(W) in PLAIN_TENSORS
        and type(x) in PLAIN_TENSORS
        and (b is None or type(b) in PLAIN_TENSORS)
        and x.device.type == "cpu"
        and W.device.type == "cpu"
        and x.dtype == W.dtype == torch.float32
        and (b is None or b.dtype == torch.float32)
        and W.dim() == 2
        and x.numel() >= ONEDNN_MIN_ROWS * max(x.shape[-1], 1)
    )


def _onednn(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, W.T, b, "none", [], "")


def _packed(W: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``W`` packed in oneDNN's own layout (same values, bit for bit the same products), made at its
    ``PACK_AFTER``-th product inside the current block and kept with it; ``None`` before, or with no
    block. The entry holds ``W`` (so its memory, the key, cannot be reused by another tensor) and
    its version (an in-place edit drops the pack)."""
    cache = _PACKS.get()
    if cache is None or not _HAS_ONEDNN_PACK:
        return None
    key = (W.data_ptr(), tuple(W.shape), W.stride())
    entry = cache.get(key)
    if entry is None or entry[1] != W._version:
        entry = cache[key] = [W, W._version, 0, None]
    entry[2] += 1
    if entry[3] is None and entry[2] >= PACK_AFTER:
        entry[3] = torch.ops.mkldnn._reorder_linear_weight(W.T.contiguous(), rows)
    return entry[3]


class _OneDNNProduct(torch.autograd.Function):
    """oneDNN's forward with the usual backward (the op itself has none)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, W)
        ctx.has_bias = b is not None
        return _onednn(x, W, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, W = ctx.saved_tensors
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        gx = (g2 @ W.T).view(x.shape) if ctx.needs_input_grad[0] else None
        gW = x2.T @ g2 if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gW, gb


def product(
    x: Float[torch.Tensor, "... d_in"],
    W: Float[torch.Tensor, "d_in d_out"],
    b: Float[torch.Tensor, "d_out"] | None = None,
    reuse: bool = False,
) -> Float[torch.Tensor, "... d_out"]:
    """``x W + b`` over the last dimension of ``x`` (any leading shape).

    ``reuse``: ``W`` is read again and again in this decoding run (the unembedding, once per step):
    from its ``PACK_AFTER``-th oneDNN product on, a copy packed in oneDNN's layout is used, which
    gives the same bits twice as fast (tiny.en's unembedding at 5 rows: 12.2 -> 5.6 ms) for one
    extra copy of ``W`` while the block lasts (packing: ~0.1 s).

    >>> product(torch.ones(5, 2), torch.eye(2), torch.zeros(2)).shape
    torch.Size([5, 2])
    """
    if type(W) not in PLAIN_TENSORS:
        # A weight subclass may run its own kernel (the int8 path's Int8Weight.weight_product):
        # called directly, it spares the Python dispatch of torch.addmm on a subclass (~40 us).
        own = getattr(type(W), "weight_product", None)
        y = own(W, x, b) if own is not None else None
        if y is not None:
            return y
    if onednn_product(x, W, b):
        grad = torch.is_grad_enabled() and (x.requires_grad or W.requires_grad or (b is not None and b.requires_grad))
        if grad:
            return _OneDNNProduct.apply(x, W, b)
        packed = _packed(W, x.numel() // x.shape[-1]) if reuse else None
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        return _onednn(x, W, b)
    x2 = x.reshape(-1, x.shape[-1])
    y = x2 @ W if b is None else torch.addmm(b, x2, W)
    return y.view(*x.shape[:-1], W.shape[-1])


__all__ = [
    "ONEDNN_MIN_ROWS",
    "PACK_AFTER",
    "PLAIN_TENSORS",
    "decoding_products",
    "keep_packed_weights",
    "onednn_product",
    "product",
]
