"""Direct logit attribution: the components (embeddings, every self- and cross-attention head,
every b_O, every MLP, the final LayerNorm's bias) sum to the model's logit within 1e-4 on random
Whisper / Qwen2-Audio and on real tiny.en and base with espeak speech; a head's attribution equals
the same number computed by hand from z, W_O, the final LN scale and W_U."""

from __future__ import annotations

import json

import pytest
import torch

from hooked_asr.circuits.dla import LN_BIAS, direct_logit_attribution, dla_transcript
from tests.circuits.conftest import qwen_inputs, whisper_inputs


def test_random_whisper_dla_sums_to_logits_and_matches_by_hand(whisper_rand):
    m = whisper_rand
    inputs = whisper_inputs(m)
    res = direct_logit_attribution(m, inputs)
    assert res.max_abs_error < 1e-4
    assert res.attributions.shape == (len(res.labels), 2, 5) and res.labels[-1] == LN_BIAS
    n = m.cfg.decoder.n_layers * m.cfg.decoder.n_heads
    assert sum(".attn.head." in x for x in res.labels) == n and sum(".cross_attn.head." in x for x in res.labels) == n
    # By hand for one cross-attention head, at every position: ((r - mean r) / s) . (w * W_U[:, t]).
    with torch.no_grad():
        _, cache = m.run_with_cache(**inputs)
    z = cache["decoder.blocks.1.cross_attn.hook_z"][:, :-1, 3]
    r = z @ m.decoder.blocks[1].cross_attn.W_O[3]
    s = cache["decoder.ln_final.hook_scale"][:, :-1]
    t = inputs["decoder_input_ids"][:, 1:]
    d = m.decoder.W_E[t] * m.decoder.ln_final.w
    by_hand = (((r - r.mean(-1, keepdim=True)) / s) * d).sum(-1)
    got = res.attributions[res.labels.index("decoder.blocks.1.cross_attn.head.3")]
    assert torch.allclose(got, by_hand, atol=1e-5)
    # The final LN bias term by hand.
    assert torch.allclose(res.attributions[-1], (m.decoder.W_E[t] * m.decoder.ln_final.b).sum(-1), atol=1e-5)


def test_logit_difference_and_one_position(whisper_rand):
    m = whisper_rand
    inputs = whisper_inputs(m)
    res = direct_logit_attribution(m, inputs, tokens=7, incorrect_tokens=9, positions=-1)
    with torch.no_grad():
        logits = m(**inputs)
    want = logits[:, -1, 7] - logits[:, -1, 9]
    assert torch.allclose(res.total[:, 0], want, atol=1e-4) and res.positions == [5]
    grid = res.heatmap("cross_attn", step=0)
    assert grid.shape == (3, 6) and not torch.isnan(grid).any()
    with pytest.raises(ValueError, match="no 'cross' heads"):
        res.heatmap("cross")
    with pytest.raises(ValueError, match="targets must be"):
        direct_logit_attribution(m, inputs, tokens=[1, 2, 3], positions=[0, 1])


def test_qwen_gqa_dla_sums_to_logits(qwen_gqa):
    inputs = qwen_inputs(qwen_gqa)
    res = direct_logit_attribution(qwen_gqa, inputs, positions=range(56, 65))
    assert res.max_abs_error < 1e-4 and LN_BIAS not in res.labels  # RMSNorm has no bias
    assert res.kinds() == ["attn"]


@pytest.fixture(scope="module")
def speech():
    from hooked_asr.datasets.espeak import synthesize

    return synthesize("The quick brown fox jumps over the lazy dog.")


def test_real_tiny_en_dla_every_step_sums_to_logits(whisper_tiny_en, speech, tmp_path):
    res = dla_transcript(whisper_tiny_en, speech)
    assert len(res.positions) >= 5 and res.max_abs_error < 1e-4, res.max_abs_error
    assert "quick" in "".join(res.token_strings).lower()
    paths = res.save(tmp_path / "dla")
    data = json.loads(paths["json"].read_text())
    assert data["labels"] == res.labels and paths["cross_attn"].stat().st_size > 1000
    assert paths["csv"].read_text().count("\n") == len(res.labels) * len(res.positions) + 1
    print(res.summary(step=2))


def test_real_base_dla_sums_to_logits(whisper_base, speech):
    toks = whisper_base.tokenizer.encode(" The quick brown fox jumps over the lazy dog.")
    res = dla_transcript(whisper_base, speech, tokens=toks)  # teacher-forced on the text spoken
    assert len(res.positions) == len(toks) and res.max_abs_error < 1e-4, res.max_abs_error
