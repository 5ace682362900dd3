"""Model-level input checks (issue 16): silence on request, English-only models refuse other
languages and translation, and a non-positive token budget is an error, not an empty result."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.audio import AudioError


def test_transcribe_and_teacher_forcing_accept_silence_when_asked(whisper_tiny_en):
    model = whisper_tiny_en
    silence = np.zeros(16000, dtype=np.float32)
    with pytest.raises(AudioError, match="allow_silence=True"):
        model.transcribe(silence, max_new_tokens=2)
    out = model.transcribe(silence, allow_silence=True, max_new_tokens=2)
    assert len(out.tokens) <= 2 and out.prompt == model.sot_sequence()
    tf = model.teacher_forced_inputs(silence, [1, 2], allow_silence=True)
    assert tf.tokens.shape[1] == tf.prompt_len + 2


def test_teacher_forced_inputs_take_a_sampling_rate(whisper_tiny_en):
    model = whisper_tiny_en
    t = np.arange(8000) / 8000
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # one second at 8 kHz
    a = model.teacher_forced_inputs(tone, sampling_rate=8000).kwargs["input_features"]
    b = model.prepare_features(tone, sampling_rate=8000)["input_features"]
    assert np.allclose(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"language": "de"}, "English-only"),
        ({"task": "translate"}, "cannot translate"),
    ],
)
def test_english_only_models_refuse_other_languages_and_translation(whisper_tiny_en, kwargs, match):
    clip = np.full(1600, 0.05, dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        whisper_tiny_en.transcribe(clip, **kwargs)
    with pytest.raises(ValueError, match=match):
        whisper_tiny_en.teacher_forced_inputs(clip, **kwargs)


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_max_new_tokens_is_an_error(tiny_hooked_whisper, n):
    model = tiny_hooked_whisper
    clip = np.full(1600, 0.05, dtype=np.float32)
    with pytest.raises(ValueError, match=f"max_new_tokens={n}"):
        model.transcribe(clip, max_new_tokens=n)
    feats = model.prepare_features(clip)["input_features"]
    with pytest.raises(ValueError, match=f"max_new_tokens={n}"):
        model.generate(feats, model.sot_sequence(), max_new_tokens=n)
