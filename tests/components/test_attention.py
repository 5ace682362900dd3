"""Attention maths: head-level edits do exactly what the formula says."""

from __future__ import annotations

import torch

import pytest

from hooked_asr.components.attention import Attention, project_heads


def _attn(**kw):
    torch.manual_seed(0)
    a = Attention(d_model=32, n_heads=4, **kw)
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0, 0.3)
    return a


def test_zeroing_a_heads_z_removes_exactly_its_output_term():
    attn = _attn(causal=True)
    x = torch.randn(2, 7, 32)
    store = {}
    attn.hook_z.add_hook(lambda z, hook: store.setdefault("z", z.clone()))
    out, _ = attn(x)
    attn.hook_z.remove_hooks()
    head = 2

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    attn.hook_z.add_hook(zero_head)
    ablated, _ = attn(x)
    attn.hook_z.remove_hooks()
    # out = sum_h z_h W_O[h] + b_O, so removing head h subtracts z_h W_O[h] and nothing else.
    expected = out - store["z"][:, :, head] @ attn.W_O[head]
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=0)


def test_per_head_result_sums_to_output():
    attn = _attn()
    x = torch.randn(1, 5, 32)
    out, _ = attn(x)
    attn.use_attn_result = True
    got = {}
    attn.hook_result.add_hook(lambda r, hook: got.setdefault("r", r))
    out2, _ = attn(x)
    assert got["r"].shape == (1, 5, 4, 32)
    torch.testing.assert_close(got["r"].sum(2) + attn.b_O, out, atol=1e-5, rtol=0)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=0)


def test_fused_and_explicit_paths_agree_with_mask_and_cache():
    attn = _attn(causal=True)
    x = torch.randn(2, 6, 32)
    fast, _ = attn(x)
    attn.hook_pattern.add_hook(lambda p, hook: None)  # forces the explicit path
    slow, _ = attn(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    # cache: 4 positions then 2 more equals all 6 at once
    _, kv = attn(x[:, :4])
    step, _ = attn(x[:, 4:], past_kv=kv)
    torch.testing.assert_close(step, slow[:, 4:], atol=1e-5, rtol=0)


def test_grouped_query_heads_share_keys():
    attn = Attention(d_model=32, n_heads=4, n_kv_heads=2, causal=True)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(1, 5, 32)
    got = {}
    attn.hook_k.add_hook(lambda k, hook: got.setdefault("k", k))
    attn.hook_pattern.add_hook(lambda p, hook: got.setdefault("p", p))
    attn(x)
    assert got["k"].shape == (1, 5, 2, 8)
    # query heads 0,1 read key head 0: same pattern iff same queries, so check via scores formula
    q = (x.unsqueeze(1) @ attn.W_Q + attn.b_Q[:, None]).transpose(1, 2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, got["k"].repeat_interleave(2, dim=2)) / 8**0.5
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(got["p"], scores.softmax(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["allocated", "hf_view", "contiguous"])
def test_fused_projection_is_the_per_head_formula_for_every_weight_layout(layout):
    # y[b, p, h] = x[b, p] W[h] + b[h], whatever the strides of W (one GEMM or one bmm).
    torch.manual_seed(0)
    h, d, dh = 3, 10, 4
    W = torch.randn(h, d, dh)
    if layout == "allocated":
        W = W.permute(1, 0, 2).contiguous().permute(1, 0, 2)  # stored [d_model, head, d_head]
    elif layout == "hf_view":
        W = W.permute(0, 2, 1).reshape(h * dh, d).view(h, dh, d).permute(0, 2, 1)  # HF [h*dh, d], viewed
    b = torch.randn(h, dh)
    x = torch.randn(3, 5, d)
    want = torch.einsum("bpm,hmd->bphd", x, W) + b
    torch.testing.assert_close(project_heads(x, W, b), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(project_heads(x, W), want - b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cross", [False, True])
def test_keys_and_values_are_stored_head_major_and_edits_to_them_still_count(cross):
    # The attention kernel (and every later decoding step, from the cache) reads k and v
    # head by head: they are stored [batch, head, pos, d_head]; hooks still see (and edit)
    # [batch, pos, head, d_head].
    attn = _attn(cross=cross)
    x, y = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    kv_input = y if cross else None
    src = y if cross else x
    _, (k, v) = attn(x, kv_input=kv_input)
    assert k.is_contiguous() and v.is_contiguous()
    torch.testing.assert_close(k, torch.einsum("bpm,hmd->bhpd", src, attn.W_K), atol=1e-5, rtol=0)
    torch.testing.assert_close(v, torch.einsum("bpm,hmd->bhpd", src, attn.W_V) + attn.b_V[:, None], atol=1e-5, rtol=0)

    def zero_v_of_head_1(t, hook):
        t = t.clone()
        t[:, :, 1] = 0
        return t

    attn.hook_v.add_hook(zero_v_of_head_1)
    edited, (_, v_edited) = attn(x, kv_input=kv_input)
    attn.hook_v.remove_hooks()
    assert v_edited[:, 1].abs().max() == 0 and v_edited.is_contiguous()
    # with head 1's values zero its z is zero, so its output term z_1 W_O[1] vanishes
    z = {}
    attn.hook_z.add_hook(lambda t, hook: z.setdefault("z", t.clone()))
    full, _ = attn(x, kv_input=kv_input)
    attn.hook_z.remove_hooks()
    torch.testing.assert_close(edited, full - z["z"][:, :, 1] @ attn.W_O[1], atol=1e-5, rtol=0)
