"""Logit lens (hooked_asr/lens/logit.py) on a small random Whisper.

What is proven: the logit lens equals Hugging Face's own hidden states pushed through its final
norm and projection (the last layer equals the model's logits); the lens during generation
equals the lens on the teacher-forced transcript; ranks, future ranks and the saturation layer on
constructed logits (including a token that flips back); dataset curves and their intervals.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hooked_asr.lens import (
    lens_curves,
    logit_lens,
    logit_lens_generate,
    saturation_layer,
    summarize_lens,
    token_ranks,
)
from hooked_asr.text import mean_ci
from tests.lens.conftest import features


def test_logit_lens_equals_hf_hidden_states_and_last_layer_equals_logits(pair):
    hf, model = pair
    feats = features(hf, 0)
    tokens = [400, 1200, 77, 9000]
    r = logit_lens(model, feats, tokens, keep_logits=True, append_eos=True)
    assert r.tokens.tolist() == tokens + [model.cfg.eos_token_id]
    inputs = model.teacher_forced_inputs(feats, r.tokens.tolist())
    p, n = inputs.prompt_len, r.n_steps
    with torch.no_grad():
        out = hf(input_features=feats, decoder_input_ids=inputs.tokens, output_hidden_states=True)
        ln, W = hf.model.decoder.layer_norm, hf.proj_out.weight
        # HF's hidden_states[l + 1] is layer l's output, except the last, which HF already normalised.
        n_layers = model.n_layers["decoder"]
        for l in range(n_layers - 1):
            expect = ln(out.decoder_hidden_states[l + 1][0, p - 1 : p - 1 + n]) @ W.T
            torch.testing.assert_close(r.logits[l], expect, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r.logits[-1], out.logits[0, p - 1 : p - 1 + n], atol=1e-4, rtol=1e-4)
        own = model(**inputs.kwargs)[0, p - 1 : p - 1 + n]
    torch.testing.assert_close(r.logits[-1], own, atol=1e-5, rtol=1e-5)
    assert torch.equal(r.final, own.argmax(-1))
    probs = F.softmax(r.logits, -1)
    torch.testing.assert_close(r.chosen_prob, probs.gather(-1, r.tokens.expand(3, -1)[..., None])[..., 0])
    torch.testing.assert_close(r.topk_probs, probs.topk(5, -1).values)


@pytest.mark.parametrize("use_cache", [True, False])
def test_lens_during_generation_equals_teacher_forced_lens(pair, use_cache):
    hf, model = pair
    feats = features(hf, 1)
    gen = logit_lens_generate(model, feats, max_new_tokens=6, use_cache=use_cache, keep_logits=True)
    transcript = model.transcribe(feats, max_new_tokens=6)[0]
    assert gen.tokens.tolist() == transcript.tokens + ([model.cfg.eos_token_id] if transcript.finished else [])
    tf = logit_lens(model, feats, gen.tokens.tolist(), append_eos=False, keep_logits=True)
    torch.testing.assert_close(gen.logits, tf.logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(gen.topk_ids, tf.topk_ids) and torch.equal(gen.saturation, tf.saturation)
    # Greedy generation picks the last layer's top-1 wherever no suppression applies.
    lp = F.log_softmax(gen.logits[-1], -1).gather(-1, gen.tokens[:, None])[:, 0]
    assert torch.all(lp[1:] <= F.log_softmax(gen.logits[-1], -1).max(-1).values[1:] + 1e-6)


def test_summarize_lens_ranks_and_future_ranks_on_constructed_logits():
    # vocab 5, 2 layers, 3 steps; chosen tokens 1, 2, 3.
    logits = torch.tensor(
        [
            [[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 5.0, 0.0, 1.0]],
            [[0.0, 9.0, 2.0, 3.0, 4.0], [0.0, 1.0, 9.0, 3.0, 4.0], [0.0, 1.0, 2.0, 9.0, 4.0]],
        ]
    )
    tokens = torch.tensor([1, 2, 3])
    s = summarize_lens(logits, tokens, top_k=2, n_future=2)
    assert s["chosen_rank"].tolist() == [[4, 3, 3], [1, 1, 1]]
    # step 0 ranks tokens 2 (s+1) and 3 (s+2); step 1 ranks token 3 (s+1); past the end is 0.
    assert s["future_ranks"][0].tolist() == [[3, 2], [4, 0], [0, 0]]
    assert s["topk_ids"][0].tolist() == [[4, 3], [0, 1], [2, 4]]
    assert s["final"].tolist() == [1, 2, 3]
    assert s["saturation"].tolist() == [1, 1, 1]
    # Ties favour the token: an argmax has rank 1 even when shared.
    assert token_ranks(torch.tensor([[2.0, 2.0, 1.0]]), torch.tensor([1])).tolist() == [1]


def test_saturation_layer_on_constructed_cases_including_a_flip_back():
    # columns: saturated from 0; from 2; right at 1, wrong at 2, right from 3 -> 3; only last layer -> 4
    top1 = torch.tensor(
        [
            [7, 1, 5, 0],
            [7, 2, 5, 0],
            [7, 5, 9, 0],
            [7, 5, 5, 0],
            [7, 5, 5, 5],
        ]
    )
    assert saturation_layer(top1).tolist() == [0, 2, 3, 4]
    # Against a final choice the last layer does not make: never saturated (= n_layers).
    assert saturation_layer(top1, final=torch.tensor([7, 5, 5, 1])).tolist() == [0, 2, 3, 5]
    # Independent brute force on random cases.
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 3, (6, 50), generator=g)
    brute = [min(l for l in range(6) if all(t[m, s] == t[-1, s] for m in range(l, 6))) for s in range(50)]
    assert saturation_layer(t).tolist() == brute


def test_lens_curves_and_confidence_intervals(pair):
    from scipy import stats

    hf, model = pair
    results = [logit_lens(model, features(hf, i), [100 + i, 200, 300]) for i in range(3)]
    c = lens_curves(results)
    probs = torch.cat([r.chosen_prob for r in results], 1)
    sats = torch.cat([r.saturation for r in results]).double().numpy()
    assert c.n_tokens == 12 and c.n_transcripts == 3
    torch.testing.assert_close(torch.tensor(c.chosen_prob[:, 0]), probs.mean(1).double(), atol=1e-6, rtol=0)
    lo, hi = stats.t.interval(0.95, len(sats) - 1, loc=sats.mean(), scale=stats.sem(sats))
    assert c.saturation[0] == pytest.approx(sats.mean()) and c.saturation[1:] == pytest.approx((lo, hi))
    assert c.saturation_hist.sum() == 12 and c.top1_agreement[-1, 0] == 1.0
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0) and all(math.isnan(v) for v in mean_ci([]))
