"""Reference inputs (hooked_asr/patching/references.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.patching import other_utterance, silence_like, white_noise_like
from hooked_asr.datasets.nonspeech import rms


def test_references():
    audio = np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 0.3
    n1, n2 = white_noise_like(audio, seed=4), white_noise_like(audio, seed=4)
    assert n1.shape == audio.shape and np.array_equal(n1, n2)
    assert not np.array_equal(n1, white_noise_like(audio, seed=5))
    assert rms(n1) == pytest.approx(rms(audio), rel=1e-5)
    assert rms(white_noise_like(audio, rms_level=0.01)) == pytest.approx(0.01, rel=1e-5)
    assert not silence_like(audio).any() and silence_like(audio).shape == audio.shape
    other = np.ones(100, dtype=np.float32)
    cut = other_utterance(audio, other)
    assert cut.shape == audio.shape and cut[:100].all() and not cut[100:].any()


# ---- one prompt for clean and reference runs, on the real multilingual whisper-base -----------------
# Decoder layer 0's self-attention reads only the token embeddings, so a reference run with the clean
# run's tokens (its prompt included) has exactly the clean activations there: patching one of its heads
# from any reference must leave the clean value exactly. Noise of seed 2 is detected as <|nn|> by
# whisper-base while the speech is <|en|>: a reference built by teacher_forced_inputs(noise, tokens)
# runs with another prompt.
HEAD = "decoder.blocks.0.attn.head.3"


@pytest.fixture(scope="module")
def multilingual(whisper_base):
    import torch

    from hooked_asr.datasets.espeak import synthesize

    model = whisper_base
    audio = synthesize("he was reading a book")
    noise = white_noise_like(audio, seed=2)
    assert model.detect_language(model.prepare_features(noise)["input_features"]) == ["nn"]
    cont = model.tokenizer.encode(" He was reading a book.")
    tf = model.teacher_forced_inputs(audio, cont, language="en")
    torch.set_num_threads(1)
    return model, audio, noise, cont, tf


def _logprob(tf):
    from hooked_asr.patching import continuation_logprob

    return lambda logits: continuation_logprob(logits, tf.tokens, tf.prompt_len)


def test_sweep_noise_reference_runs_with_the_clean_prompt(multilingual):
    from hooked_asr.patching import SweepItem, sweep

    model, audio, *_ = multilingual
    res = sweep(
        model,
        [SweepItem("a", audio)],
        [HEAD],
        mode="teacher_forced",
        metrics=["logprob"],
        reference="noise",
        reference_seed=2,
        progress=False,
    )  # language detected: <|en|>
    row = res.table.iloc[0]
    assert row["value"] == row["clean"]


def test_references_with_another_prompt_are_refused_naming_both(multilingual):
    import torch

    from hooked_asr.patching import attribution_patching, patching_effects, record_reference

    model, _, noise, cont, tf = multilingual
    wrong = model.teacher_forced_inputs(noise, cont).kwargs  # language detected on the noise: <|nn|>
    with pytest.raises(ValueError, match=r"position 1 \(in the prompt\).*<\|nn\|>.*<\|en\|>"):
        attribution_patching(model, tf.kwargs, wrong, [HEAD], _logprob(tf))
    cache = record_reference(model, wrong, [HEAD])
    with pytest.raises(ValueError, match=r"<\|startoftranscript\|><\|nn\|><\|transcribe\|><\|notimestamps\|>"):
        patching_effects(model, tf.kwargs, cache, [HEAD], _logprob(tf))
    # chosen on purpose: accepted
    from hooked_asr.patching import reference_inputs

    explicit = reference_inputs(model, tf.kwargs, noise, tokens=wrong["decoder_input_ids"])
    assert torch.equal(explicit["decoder_input_ids"], wrong["decoder_input_ids"])
    assert float(attribution_patching(model, tf.kwargs, explicit, [HEAD], _logprob(tf))["attribution"][0]) != 0.0


def test_attribution_and_real_patching_of_a_layer0_head_keep_the_clean_value(multilingual):
    import torch

    from hooked_asr.patching import (
        attribution_patching,
        patch,
        patching_effects,
        reference_cache,
        run_with_interventions,
    )

    model, _, noise, _, tf = multilingual
    metric = _logprob(tf)
    assert float(attribution_patching(model, tf.kwargs, noise, [HEAD], metric)["attribution"][0]) == 0.0
    cache = reference_cache(model, tf.kwargs, noise, [f"decoder.blocks.0.attn.hook_z"])
    assert torch.equal(cache.tokens, tf.kwargs["decoder_input_ids"].cpu())
    assert float(patching_effects(model, tf.kwargs, cache, [HEAD], metric)["effect"][0]) == 0.0
    with torch.no_grad():
        clean = model(**tf.kwargs)
        patched = run_with_interventions(model, [patch(HEAD, cache)], **tf.kwargs)
    assert torch.equal(patched, clean)
