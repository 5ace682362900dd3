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

The values agree to float32 rounding (~1e-6 relative). oneDNN's op has no backward, so a product
that autograd records, a weight that is a tensor subclass (the int8 path's ``Int8Weight``, which
runs its own kernel), another dtype or device, all take ``torch.addmm`` / ``@`` as before.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import nn

ONEDNN_MIN_ROWS = 3
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_PLAIN = (torch.Tensor, nn.Parameter)


def onednn_product(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> bool:
    """Whether ``x @ W + b`` may run as oneDNN's linear (see the module docstring)."""
    return (
        _HAS_ONEDNN_LINEAR
        and type(W) in _PLAIN
        and type(x) in _PLAIN
        and (b is None or type(b) in _PLAIN)
        and x.device.type == "cpu"
        and W.device.type == "cpu"
        and x.dtype == W.dtype == torch.float32
        and (b is None or b.dtype == torch.float32)
        and W.dim() == 2
        and x.numel() >= ONEDNN_MIN_ROWS * max(x.shape[-1], 1)
        and not (
            torch.is_grad_enabled() and (x.requires_grad or W.requires_grad or (b is not None and b.requires_grad))
        )
    )


def product(
    x: Float[torch.Tensor, "... d_in"],
    W: Float[torch.Tensor, "d_in d_out"],
    b: Float[torch.Tensor, "d_out"] | None = None,
) -> Float[torch.Tensor, "... d_out"]:
    """``x W + b`` over the last dimension of ``x`` (any leading shape).

    >>> product(torch.ones(5, 2), torch.eye(2), torch.zeros(2)).shape
    torch.Size([5, 2])
    """
    if onednn_product(x, W, b):
        return torch.ops.mkldnn._linear_pointwise(x, W.T, b, "none", [], "")
    x2 = x.reshape(-1, x.shape[-1])
    y = x2 @ W if b is None else torch.addmm(b, x2, W)
    return y.view(*x.shape[:-1], W.shape[-1])


__all__ = ["ONEDNN_MIN_ROWS", "onednn_product", "product"]
