"""The components' one weight product: x W + b whichever kernel runs it, the same numbers with and
without autograd recording, and gradients equal to the plain matrix products'."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.components.products import decoding_products, onednn_product, product


@pytest.mark.parametrize("rows", [1, 2, 3, 40])
def test_product_equals_the_matrix_product_and_ignores_the_grad_mode(rows):
    torch.manual_seed(0)
    x, W, b = torch.randn(rows, 7, 24), torch.randn(24, 16), torch.randn(16)
    ref = x.double() @ W.double() + b.double()
    with torch.no_grad():
        outside = product(x, W, b)
    with torch.no_grad(), decoding_products():
        plain = product(x, W, b)
    torch.testing.assert_close(plain.double(), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(outside.double(), ref, atol=1e-4, rtol=1e-5)
    # a run that records gradients gives the same activations bit for bit (attribution patching
    # subtracts the two runs' values: a kernel switch with the grad mode would leave ~1e-10 residues)
    xg, Wg, bg = (t.clone().requires_grad_(True) for t in (x, W, b))
    with decoding_products():
        y = product(xg, Wg, bg)
    assert torch.equal(y, plain)
    g = torch.randn_like(y)
    y.backward(g)
    x2, W2, b2 = (t.clone().requires_grad_(True) for t in (x, W, b))
    (x2 @ W2 + b2).backward(g)
    for got, want in ((xg.grad, x2.grad), (Wg.grad, W2.grad), (bg.grad, b2.grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_subclass_weights_and_other_dtypes_keep_the_plain_product():
    # the int8 path's weights are a Tensor subclass that intercepts addmm / @: never bypassed
    class Marked(torch.Tensor):
        pass

    x = torch.randn(5, 8)
    W = torch.randn(8, 4)
    assert not onednn_product(x, W)  # outside decoding: analyses compare runs bit for bit
    with decoding_products():
        assert onednn_product(x, W) and not onednn_product(x[:2], W)
        assert not onednn_product(x, W.as_subclass(Marked))
        assert not onednn_product(x.double(), W.double())
    with torch.no_grad(), decoding_products():
        torch.testing.assert_close(product(x.double(), W.double()), x.double() @ W.double())


@pytest.mark.parametrize("rows", [3, 5, 40])
@torch.no_grad()
def test_a_reused_weight_is_packed_after_a_few_products_and_gives_the_same_bits(rows):
    # The unembedding is read at every decoding step: from its PACK_AFTER-th product in a block a
    # oneDNN-packed copy runs it. The products must not change by a bit (beam search's tokens and
    # every hook value depend on them), and an in-place edit of the weight must drop the pack.
    from hooked_asr.components import products as P

    if not P._HAS_ONEDNN_PACK:
        pytest.skip("this PyTorch build has no oneDNN weight packing")
    torch.manual_seed(0)
    W_E = torch.randn(300, 24)  # stored as the tied unembedding is: W_U = W_E^T, a view
    x = torch.randn(rows, 1, 24)
    with decoding_products():
        plain = product(x, W_E.T)
        outs = [product(x, W_E.T, reuse=True) for _ in range(P.PACK_AFTER + 2)]
        cache = P._PACKS.get()
        assert len(cache) == 1 and next(iter(cache.values()))[3] is not None  # packed by now
        assert all(torch.equal(y, plain) for y in outs)
        W_E.mul_(2.0)  # an edit in place: the pack would be stale
        assert torch.equal(product(x, W_E.T, reuse=True), product(x, W_E.T))
    assert P._PACKS.get() is None  # dropped with the block
    with P.keep_packed_weights():
        for _ in range(2):  # two decoding runs (two windows): the pack made in the first is kept
            with decoding_products():
                for _ in range(P.PACK_AFTER):
                    product(x, W_E.T, reuse=True)
        assert next(iter(P._PACKS.get().values()))[2] == 2 * P.PACK_AFTER
