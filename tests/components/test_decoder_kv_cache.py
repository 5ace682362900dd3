"""The preallocated key/value cache: steps append into one buffer (the past is not copied per
step), and any continuation from any cache gives what a fresh run of the whole sequence gives."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.components.attention import KVCache, append_kv
from tests.components.test_decoder import ROTARY, _decoder


@pytest.mark.parametrize("kw", [{}, ROTARY], ids=["whisper", "qwen2"])
@torch.no_grad()
def test_steps_append_in_place_and_branches_stay_apart(kw):
    dec = _decoder(**kw)
    enc = torch.randn(2, 10, 32) if dec.cfg.cross_attention else None
    toks = torch.randint(0, 50, (2, 9))
    _, cache = dec(toks[:, :4], encoder_out=enc)
    ptrs = []
    for t in range(4, 8):  # one token per step, as generate runs
        _, cache = dec(toks[:, t : t + 1], past_kv=cache)
        ptrs.append(cache[0]["self"][0].data_ptr())
    assert len(set(ptrs[1:])) == 1  # after the first append the buffer stays: no copy of the past per step
    # two continuations from the same cache: the second must not see the first's token
    a, b = torch.randint(0, 50, (2, 1)), torch.randint(0, 50, (2, 1))
    la, ca = dec(a, past_kv=cache)
    lb, cb = dec(b, past_kv=cache)
    la2, _ = dec(b, past_kv=ca)  # and the first branch goes on after the second was written
    for new, logits in ((a, la), (b, lb)):
        full, _ = dec(torch.cat([toks[:, :8], new], 1), encoder_out=enc)
        torch.testing.assert_close(logits[:, -1], full[:, -1], atol=1e-5, rtol=0)
    full, _ = dec(torch.cat([toks[:, :8], a, b], 1), encoder_out=enc)
    torch.testing.assert_close(la2[:, -1], full[:, -1], atol=1e-5, rtol=0)
    assert cb[0]["self"][0].shape[2] == ca[0]["self"][0].shape[2] == 9


def test_append_kv_equals_cat_and_keeps_autograd():
    past = (torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4))
    new = (torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    cat = lambda *kvs: tuple(torch.cat([kv[i] for kv in kvs], 2) for i in range(2))
    with torch.no_grad():
        out = append_kv(past, *new)
        assert isinstance(out, KVCache) and out.length == 6
        assert all(torch.equal(a, b) for a, b in zip(out, cat(past, new)))
        again = append_kv(out, *new)
        assert again.buffer is out.buffer  # written in place: the past is not copied
        assert all(torch.equal(a, b) for a, b in zip(again, cat(past, new, new)))
        # a second continuation of `out` must not write over the first's position 6
        other = (torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
        branch = append_kv(out, *other)
        assert branch.buffer is not out.buffer
        assert all(torch.equal(a, b) for a, b in zip(branch, cat(past, new, other)))
        assert all(torch.equal(a, b) for a, b in zip(again, cat(past, new, new)))
    p = past[0].clone().requires_grad_()
    k, _ = append_kv((p, past[1]), *new)  # with a gradient wanted it is a plain cat
    k.sum().backward()
    assert torch.equal(p.grad, torch.ones_like(past[0]))


@pytest.mark.parametrize("kw", [{}, ROTARY], ids=["whisper", "qwen2"])
@torch.no_grad()
def test_reorder_in_place_equals_the_copying_reorder_and_keeps_the_buffer(kw):
    # Beam search reorders its own cache after every step: in place, only the rows whose parent
    # changed are copied, and the next step appends into the same buffer (no copy of the past).
    from hooked_asr.components.decoder import reorder_cache

    dec = _decoder(**kw)
    enc = torch.randn(4, 10, 32) if dec.cfg.cross_attention else None
    toks = torch.randint(0, 50, (4, 7))
    _, cache = dec(toks[:, :4], encoder_out=enc)
    for t in range(4, 6):
        _, cache = dec(toks[:, t : t + 1], past_kv=cache)
    rows = torch.tensor([2, 0, 2, 3])  # a repeated parent, a dropped one, one that stays
    copied = reorder_cache(cache, rows)
    ptr = cache[0]["self"][0].data_ptr()
    moved = reorder_cache(cache, rows, in_place=True)
    for a, b in zip(copied, moved):
        assert set(a) == set(b)
        for kind in a:
            assert all(torch.equal(x, y) for x, y in zip(a[kind], b[kind]))
    new = toks[:, 6:7]
    step_copied, _ = dec(new, past_kv=copied)
    step_moved, after = dec(new, past_kv=moved)
    assert torch.equal(step_copied, step_moved)
    assert after[0]["self"][0].data_ptr() == ptr  # appended into the same buffer
