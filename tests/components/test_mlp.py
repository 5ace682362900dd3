"""The GELU MLP: the in-place fast path (no grad, hook_pre not live) keeps every hook's value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hooked_asr.components.mlp import MLP


def _mlp():
    torch.manual_seed(0)
    m = MLP(8, 16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("live", ["none", "pre", "post"])
@pytest.mark.parametrize("grad", [False, True])
def test_every_path_gives_the_formula_and_hooks_see_their_own_values(live, grad):
    m, x = _mlp(), torch.randn(2, 5, 8)
    pre_want = x @ m.W_in + m.b_in
    seen = {}
    if live != "none":
        # run_with_cache stores the tensor itself (detached, not copied): a later in-place op on it
        # would silently change the cache.
        getattr(m, f"hook_{live}").add_hook(lambda t, hook: seen.update({live: t.detach()}))
    with torch.set_grad_enabled(grad):
        out = m(x)
    torch.testing.assert_close(out, F.gelu(pre_want) @ m.W_out + m.b_out, atol=1e-5, rtol=0)
    if live == "pre":
        torch.testing.assert_close(seen["pre"], pre_want, atol=1e-5, rtol=0)
    if live == "post":
        torch.testing.assert_close(seen["post"], F.gelu(pre_want), atol=1e-5, rtol=0)
    if grad:
        out.sum().backward()  # the out-of-place path keeps what GELU's backward needs
        assert m.W_in.grad is not None and torch.isfinite(m.W_in.grad).all()
