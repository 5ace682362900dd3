"""Odd audio inputs get a deliberate answer (README "Bad input"): an AudioError naming the cause
and the fix, or a documented behaviour; never a silent wrong answer or an error from deep inside."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from hooked_asr.audio import AudioError, load_audio, prepare_features

SILENCE_PEAK = 1e-4  # hooked_asr.audio.SILENCE_PEAK (written out so this file runs on older code too)


def _tone(seconds: float = 0.5, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("level", [1e-9, 1e-6, 0.5 * SILENCE_PEAK])
def test_near_silence_is_silence(level):
    """1e-9 noise used to pass (only exact zeros counted) and transcribed to 'you'."""
    rng = np.random.default_rng(0)
    noise = (level * rng.uniform(-1, 1, 16000)).astype(np.float32)
    with pytest.raises(AudioError, match="silent.*peak"):
        load_audio(noise)
    assert load_audio(noise, allow_silence=True).shape == (16000,)


def test_quiet_speech_level_is_not_silence():
    assert load_audio(_tone(amp=10 * SILENCE_PEAK)).shape == (8000,)


def test_float_array_in_the_int16_range_is_an_error_not_garbage():
    unscaled = (_tone() * 32767).astype(np.float32)
    with pytest.raises(AudioError, match="int16.*32768"):
        load_audio(unscaled)
    with pytest.warns(UserWarning, match="peaks at 1.2"):  # mild clipping is kept, with a warning
        load_audio(_tone(amp=1.2))


def test_float_wav_file_in_the_int16_range_is_an_error(tmp_path):
    sf.write(tmp_path / "f.wav", (_tone() * 30000).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="f.wav.*int16"):
        load_audio(tmp_path / "f.wav")


@pytest.mark.parametrize("shape", [(2, 16000), (16000, 2), (3, 8000)])
def test_two_dimensional_array_is_ambiguous_and_refused(shape):
    """[2, n] used to be averaged as stereo even when it held two clips."""
    with pytest.raises(AudioError, match=r"shape \(\d+, \d+\).*list of 1-D arrays.*mean\(axis="):
        load_audio(np.zeros(shape, np.float32) + 0.1)
    with pytest.raises(AudioError, match="list of 1-D arrays"):
        prepare_features(torch.full(shape, 0.1), 80)


@pytest.mark.parametrize("shape", [(1, 8000), (8000, 1)])
def test_single_row_or_column_is_one_clip(shape):
    x = _tone().reshape(shape)
    np.testing.assert_array_equal(load_audio(x), _tone())


def test_stereo_file_is_mixed_with_a_warning(tmp_path):
    sf.write(tmp_path / "s.wav", np.stack([_tone(), 0.5 * _tone()], axis=1), 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match="2 channels"):
        out = load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(out, 0.75 * _tone(), atol=1e-6)


@pytest.mark.parametrize(
    "rate, match",
    [
        (16000.5, "whole number"),
        ("16000", "str"),
        (0, "positive"),
        (-8000, "positive"),
        (True, "bool"),
        (float("nan"), "whole number"),
    ],
)
def test_bad_sampling_rates(rate, match):
    with pytest.raises(AudioError, match=match):
        load_audio(_tone(), sampling_rate=rate)


def test_whole_float_and_numpy_sampling_rates_are_accepted():
    ref = load_audio(_tone(), sampling_rate=8000)
    np.testing.assert_array_equal(load_audio(_tone(), sampling_rate=8000.0), ref)
    np.testing.assert_array_equal(load_audio(_tone(), sampling_rate=np.int64(8000)), ref)


def test_empty_wav_file_is_reported_empty(tmp_path):
    sf.write(tmp_path / "e.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="e.wav is empty"):
        load_audio(tmp_path / "e.wav")


def test_plain_list_of_floats_is_one_clip():
    feats, is_batch = prepare_features(_tone().tolist(), 80)
    ref, _ = prepare_features(_tone(), 80)
    assert not is_batch
    torch.testing.assert_close(feats, ref)
    feats2, is_batch2 = prepare_features([_tone().tolist(), _tone()], 80)  # a list of clips stays a batch
    assert is_batch2 and feats2.shape[0] == 2


def test_integer_log_mel_features_are_refused():
    with pytest.raises(AudioError, match="floating point.*int64"):
        prepare_features(torch.zeros(1, 80, 3000, dtype=torch.long), 80)


@pytest.mark.parametrize(
    "audio, match",
    [
        (None, "NoneType"),
        (3.5, "float"),
        (b"RIFF", "bytes"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.zeros(10, complex), "complex"),
    ],
)
def test_things_that_are_not_audio(audio, match):
    with pytest.raises(AudioError, match=match):
        load_audio(audio)


def test_batch_size_zero_is_a_clear_error(audio_whisper):
    from hooked_asr.datasets.labelled import transcribe_all
    from hooked_asr.sae import ModelFrameSource

    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ModelFrameSource(audio_whisper, [_tone()], "encoder.blocks.0.hook_resid_post", batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        transcribe_all(audio_whisper, [_tone()], batch_size=0, progress=False)
