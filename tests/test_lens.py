"""Lenses (hooked_asr/lens.py, hooked_asr/tuned_lens.py) on small random Whisper models.

What is proven: the logit lens equals Hugging Face's own hidden states pushed through its final
norm and projection (the last layer equals the model's logits); the lens during generation
equals the lens on the teacher-forced transcript; ranks, future ranks and the saturation layer on
constructed logits (including a token that flips back); the encoder lens reads the same states as
``encode(stop_at_layer)``, its last layer reproduces the ordinary transcript and every batched row
equals decoding that layer alone; the tuned lens starts as the logit lens, training lowers its KL,
and it survives a save/load round trip.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from hooked_asr import HookedWhisper
from hooked_asr.lens import (
    apply_logit_lens,
    edit_distance,
    encoder_lens,
    encoder_lens_states,
    find_repetition_loop,
    lens_curves,
    logit_lens,
    logit_lens_generate,
    mean_ci,
    phoneme_error_rate,
    saturation_layer,
    summarize_lens,
    token_ranks,
    token_similarity,
)
from hooked_asr.lens import TunedLens, collect_decoder_residuals, compare_lenses, evaluate_kl, train_tuned_lens

from tests.conftest import make_hf_whisper


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_whisper("v3-128mel")  # 3 decoder layers, 2 encoder layers
    return hf, HookedWhisper.from_hf(hf)


def _features(hf, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, hf.config.num_mel_bins, 2 * hf.config.max_source_positions, generator=g)


# ---- logit lens ------------------------------------------------------------------------------


def test_logit_lens_equals_hf_hidden_states_and_last_layer_equals_logits(pair):
    hf, model = pair
    feats = _features(hf, 0)
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
    feats = _features(hf, 1)
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
    results = [logit_lens(model, _features(hf, i), [100 + i, 200, 300]) for i in range(3)]
    c = lens_curves(results)
    probs = torch.cat([r.chosen_prob for r in results], 1)
    sats = torch.cat([r.saturation for r in results]).double().numpy()
    assert c.n_tokens == 12 and c.n_transcripts == 3
    torch.testing.assert_close(torch.tensor(c.chosen_prob[:, 0]), probs.mean(1).double(), atol=1e-6, rtol=0)
    lo, hi = stats.t.interval(0.95, len(sats) - 1, loc=sats.mean(), scale=stats.sem(sats))
    assert c.saturation[0] == pytest.approx(sats.mean()) and c.saturation[1:] == pytest.approx((lo, hi))
    assert c.saturation_hist.sum() == 12 and c.top1_agreement[-1, 0] == 1.0
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0) and all(math.isnan(v) for v in mean_ci([]))


# ---- token similarity ------------------------------------------------------------------------


def test_token_similarity_cosine_and_phoneme_distance(pair, monkeypatch):
    hf, model = pair
    r = logit_lens(model, _features(hf, 2), [500, 600])
    sim = token_similarity(model, r, k=5, phonemes=False)
    E = hf.model.decoder.embed_tokens.weight.detach()
    l, s, j = 1, 0, 2
    a, b = E[int(r.tokens[s])], E[int(r.topk_ids[l, s, j])]
    expect = math.nan if int(r.topk_ids[l, s, j]) == int(r.tokens[s]) else float(F.cosine_similarity(a, b, dim=0))
    got = float(sim.cosine[l, s, j])
    assert (math.isnan(expect) and math.isnan(got)) or got == pytest.approx(expect, abs=1e-5)
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], [1, 2]) == 2
    assert phoneme_error_rate("kˈæt", "bæt") == pytest.approx(1 / 3)  # stress marks are not phonemes
    assert math.isnan(phoneme_error_rate("", "a"))
    # Without espeak the phoneme path fails with a message that says what to install.
    monkeypatch.setitem(sys.modules, "hooked_asr.datasets.espeak", None)
    with pytest.raises(RuntimeError, match="espeakng-loader"):
        token_similarity(model, r, phonemes=True)


# ---- encoder lens ----------------------------------------------------------------------------


def test_find_repetition_loop_on_constructed_sequences():
    assert find_repetition_loop([1, 2, 1, 2, 1, 2]) == (2, 3)
    assert find_repetition_loop([9, 9, 9, 9, 9, 9, 9]) == (1, 7)
    assert find_repetition_loop([5, 6, 5, 6, 7]) is None  # said twice is not a loop
    assert find_repetition_loop([1, 2, 3, 1, 2, 3, 1, 2, 3, 4]) == (3, 3)
    assert find_repetition_loop([]) is None


def test_encoder_lens_states_equal_truncated_encoder(pair):
    hf, model = pair
    feats = {"input_features": _features(hf, 3)}
    states = encoder_lens_states(model, feats, [0, 1])
    with torch.no_grad():
        for i, l in enumerate([0, 1]):
            expect = model.finish_encoder(model.encode(feats["input_features"], stop_at_layer=l + 1))
            torch.testing.assert_close(states[i : i + 1], expect, atol=0, rtol=0)
        torch.testing.assert_close(states[-1:], model.encode(feats["input_features"]), atol=1e-6, rtol=1e-6)


def test_encoder_lens_last_layer_is_the_transcript_and_rows_equal_single_layer_decoding(pair):
    hf, model = pair
    feats = _features(hf, 4)
    final = model.transcribe(feats, max_new_tokens=10)[0]
    res = encoder_lens(model, feats, max_new_tokens=10, final=final)
    assert [r.layer for r in res.layers] == [0, 1]
    last = res.layers[-1]
    assert last.tokens == final.tokens and last.common_prefix == len(final.tokens)
    assert last.matches_final_prefix == bool(final.tokens)
    # Batched decoding of layer 0 equals decoding it alone.
    states = encoder_lens_states(model, {"input_features": feats}, [0])
    alone = model.generate(feats, final.prompt, max_new_tokens=10, encoder_hidden_states=states)
    toks = alone.tokens[0].tolist()
    toks = toks[: toks.index(model.cfg.eos_token_id)] if model.cfg.eos_token_id in toks else toks
    assert res.layers[0].tokens == toks
    assert res.layers[0].repetition_loop == (find_repetition_loop(toks) is not None)
    with pytest.raises(ValueError, match=r"encoder has 2 blocks \(0-1\)"):
        encoder_lens(model, feats, layers=[2], final=final)


# ---- tuned lens ------------------------------------------------------------------------------


def test_tuned_lens_starts_as_logit_lens_and_training_lowers_kl(pair, tmp_path):
    hf, model = pair
    feats = [_features(hf, 10 + i) for i in range(4)]
    resid = collect_decoder_residuals(model, feats, max_new_tokens=8, progress=False)
    lens = TunedLens.for_model(model)
    with torch.no_grad():
        torch.testing.assert_close(lens.logits(model, resid), apply_logit_lens(model, resid), atol=1e-5, rtol=1e-5)
    before = evaluate_kl(model, None, resid)
    assert before[-1].abs() < 1e-5 and before[0] > 0
    params_before = [p.clone() for p in model.parameters()]
    lens, hist = train_tuned_lens(model, resid, lens, steps=30, batch_size=16, lr=3e-3, val_fraction=0.0, progress=False)
    after = evaluate_kl(model, lens, resid)
    assert torch.all(after[:-1] < 0.5 * before[:-1]), (before, after)
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(params_before, model.parameters()))
    torch.testing.assert_close(lens.weight[-1], torch.eye(lens.d_model))  # the last layer stays exact
    cmp = compare_lenses(model, lens, resid)
    assert cmp["agreement_logit_lens"][-1] == 1.0 == cmp["agreement_tuned_lens"][-1]
    assert cmp["kl_tuned_lens"][0] == pytest.approx(float(after[0]), rel=1e-4)
    lens.save(tmp_path / "lens", extra={"steps": 30})
    loaded = TunedLens.load(tmp_path / "lens.safetensors")
    assert torch.equal(loaded.weight, lens.weight.detach()) and loaded.meta["steps"] == 30
    with pytest.raises(ValueError, match="decoder layers"):
        TunedLens(2, 8).check_model(model)


# ---- the same code on Qwen2-Audio (a decoder-only LM reading the audio as a prefix) ----------


def test_lenses_are_model_agnostic_on_qwen2_audio():
    import numpy as np

    from hooked_asr import HookedQwen2Audio
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    hf = make_hf_qwen2_audio("mha")
    model = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    window = 2 * hf.config.audio_config.max_source_positions * 160
    clip = 0.3 * np.random.default_rng(0).standard_normal(window - 1000).astype(np.float32)
    gen = logit_lens_generate(model, clip, max_new_tokens=6, keep_logits=True)
    tf = logit_lens(model, clip, gen.tokens.tolist(), append_eos=False, keep_logits=True)
    torch.testing.assert_close(gen.logits, tf.logits, atol=1e-4, rtol=1e-4)
    inputs = model.teacher_forced_inputs(clip, tf.tokens.tolist())
    p = inputs.prompt_len
    with torch.no_grad():
        logits = model(**inputs.kwargs)[0, p - 1 : p - 1 + tf.n_steps]
    torch.testing.assert_close(tf.logits[-1], logits, atol=1e-5, rtol=1e-5)
    final = model.transcribe(clip, max_new_tokens=6)
    res = encoder_lens(model, clip, max_new_tokens=6, final=final)
    assert len(res.layers) == model.n_layers["encoder"] and res.layers[-1].tokens == final.tokens
