"""Per-head results from hook_z and W_O: they sum (with b_O) to the attention's output hook, equal
the opt-in hook_result, and equal a direct z_h W_O[h] per head - for encoder self-attention, decoder
self-attention (grouped-query on Qwen2-Audio) and decoder cross-attention."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.circuits import head_components, head_result, head_results, stack_head_results
from hooked_asr.patching import ComponentError
from tests.circuits.conftest import qwen_inputs, whisper_inputs

OUT = {"attn": "hook_attn_out", "cross_attn": "hook_cross_attn_out"}


def _check_sums(model, cache, stack):
    heads, labels = stack_head_results(model, cache, stack=stack)
    n = model.cfg.n_layers(stack)
    kinds = ["attn", "cross_attn"] if f"{stack}.blocks.0.hook_cross_attn_out" in cache else ["attn"]
    assert len(labels) == n * len(kinds) * getattr(model.cfg, stack).n_heads
    worst = 0.0
    for l in range(n):
        for kind in kinds:
            idx = [i for i, s in enumerate(labels) if s.startswith(f"{stack}.blocks.{l}.{kind}.head.")]
            b_O = model.get_submodule(f"{stack}.blocks.{l}.{kind}").b_O
            total = heads[idx].sum(0) + (0 if b_O is None else b_O)
            worst = max(worst, (total - cache[f"{stack}.blocks.{l}.{OUT[kind]}"]).abs().max().item())
    return worst


def test_whisper_head_results_sum_to_attention_outputs(whisper_rand):
    _, cache = whisper_rand.run_with_cache(**whisper_inputs(whisper_rand))
    for stack in ("encoder", "decoder"):
        assert _check_sums(whisper_rand, cache, stack) < 1e-4


def test_qwen_gqa_head_results_sum_to_attention_outputs(qwen_gqa):
    assert qwen_gqa.cfg.decoder.n_kv_heads < qwen_gqa.cfg.decoder.n_heads  # grouped-query attention
    _, cache = qwen_gqa.run_with_cache(**qwen_inputs(qwen_gqa))
    for stack in ("encoder", "decoder"):
        assert _check_sums(qwen_gqa, cache, stack) < 1e-4
    assert all(".cross_attn." not in s for s in stack_head_results(qwen_gqa, cache, "decoder")[1])


def test_head_results_equal_hook_result_and_direct_z_times_W_O(whisper_rand):
    inputs = whisper_inputs(whisper_rand)
    attns = [m for n, m in whisper_rand.named_modules() if n.endswith(("attn", "cross_attn"))]
    for a in attns:
        a.use_attn_result = True
    try:
        _, cache = whisper_rand.run_with_cache(**inputs)
    finally:
        for a in attns:
            a.use_attn_result = False
    for stack, layer, kind in [("encoder", 1, "attn"), ("decoder", 2, "attn"), ("decoder", 0, "cross_attn")]:
        ours = head_results(whisper_rand, cache, stack, layer, kind)
        assert torch.allclose(ours, cache[f"{stack}.blocks.{layer}.{kind}.hook_result"], atol=1e-5)
        W_O = whisper_rand.get_submodule(f"{stack}.blocks.{layer}.{kind}").W_O
        z = cache[f"{stack}.blocks.{layer}.{kind}.hook_z"]
        for h in range(W_O.shape[0]):
            direct = z[:, :, h, :] @ W_O[h]
            one = head_result(whisper_rand, cache, f"{stack}.blocks.{layer}.{kind}.head.{h}")
            assert torch.allclose(one, direct, atol=1e-6)
            assert torch.allclose(ours[:, :, h], direct, atol=1e-5)


def test_labels_are_sweep_components_in_forward_order(whisper_rand):
    comps = head_components(whisper_rand, "decoder")
    n = whisper_rand.cfg.decoder.n_heads
    assert [c.name for c in comps[: n + 1]] == [f"decoder.blocks.0.attn.head.{h}" for h in range(n)] + [
        "decoder.blocks.0.cross_attn.head.0"
    ]
    assert {c.hook_name for c in comps if c.layer == 1} == {
        "decoder.blocks.1.attn.hook_z",
        "decoder.blocks.1.cross_attn.hook_z",
    }
    assert len(head_components(whisper_rand, "decoder", layer=1)) == 2 * n  # layers strictly before 1
    with pytest.raises(ComponentError, match="head 9 does not exist"):
        head_result(whisper_rand, {}, "decoder.blocks.0.cross_attn.head.9")
    with pytest.raises(ValueError, match="not an attention head"):
        head_result(whisper_rand, {}, "decoder.blocks.0.mlp")
    with pytest.raises(KeyError, match="not in the cache"):
        head_result(whisper_rand, {}, "decoder.blocks.0.cross_attn.head.1")


def test_real_tiny_en_head_results_sum_to_attention_outputs(whisper_tiny_en):
    m = whisper_tiny_en
    mel = torch.randn(1, 80, 3000) * 0.3
    toks = torch.tensor([m.sot_sequence() + [464, 2068, 7586]])
    _, cache = m.run_with_cache(
        input_features=mel, decoder_input_ids=toks, names_filter=lambda n: n.endswith(("hook_z", "attn_out"))
    )
    assert _check_sums(m, cache, "decoder") < 1e-4
    assert _check_sums(m, cache, "encoder") < 1e-3  # 1500 frames, activations of O(10)
