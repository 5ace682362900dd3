"""Audio reading, validation and log-mel features (equal to HF's WhisperFeatureExtractor)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor

from hooked_asr.audio import AudioError, chunk_audio, load_audio, log_mel_spectrogram, prepare_features


def _speechlike(seconds=2.5, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (
        0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    ).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.7, 12.0, 30.0])
def test_log_mel_equals_hf_feature_extractor(n_mels, seconds):
    audio = _speechlike(seconds)
    ref = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="np").input_features
    ours = log_mel_spectrogram(audio, n_mels)
    assert ours.shape == (1, n_mels, 3000)
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-5)


def test_batched_features_equal_one_by_one():
    a, b = _speechlike(1.0, seed=1), _speechlike(4.0, seed=2)
    batch, is_batch = prepare_features([a, b], 80)
    assert is_batch and batch.shape == (2, 80, 3000)
    torch.testing.assert_close(batch[1:], log_mel_spectrogram(b))


def test_files_stereo_and_resampling(tmp_path):
    mono = _speechlike(1.0, sr=44100)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 44100)
    with pytest.warns(UserWarning, match="2 channels; mixing them to mono"):
        got = load_audio(tmp_path / "s.flac")
    assert got.shape == (16000,)
    # the resampled mix equals resampling the average of the channels
    from scipy.signal import resample_poly

    want = resample_poly(stereo.mean(1), 160, 441)
    np.testing.assert_allclose(got, want, atol=1e-4)
    sf.write(tmp_path / "m.wav", mono[:22050], 22050)
    assert load_audio(tmp_path / "m.wav").shape == (16000,)


def test_int16_is_scaled():
    x = (np.sin(np.linspace(0, 100, 16000)) * 16384).astype(np.int16)
    np.testing.assert_allclose(load_audio(x), x / 32768.0, atol=1e-6)


@pytest.mark.parametrize(
    "audio, match",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.full(1600, np.nan, np.float32), "1600 NaN/inf samples"),
        (np.r_[np.ones(10), np.inf].astype(np.float32), "1 NaN/inf"),
        (np.zeros(16000, np.float32), "silent"),
        (np.ones(16000 * 31, np.float32) * 0.1, r"lasts 31.0 s.*chunk_audio"),
        (np.ones((3, 4, 5), np.float32), "3 dimensions"),
        (np.arange(10), "dtype int64"),
    ],
)
def test_bad_audio_gives_clear_errors(audio, match):
    with pytest.raises(AudioError, match=match):
        load_audio(audio)


def test_bad_files(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "x.wav").write_text("not audio")
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(tmp_path / "x.wav")
    sf.write(tmp_path / "y.wav", _speechlike(0.5, 8000), 8000)
    with pytest.raises(AudioError, match="is 8000 Hz but sampling_rate=16000"):
        load_audio(tmp_path / "y.wav", sampling_rate=16000)


def test_silence_and_long_audio_on_request():
    assert load_audio(np.zeros(100, np.float32), allow_silence=True).shape == (100,)
    long = np.ones(16000 * 65, np.float32) * 0.1
    chunks = chunk_audio(load_audio(long, allow_long=True))
    assert [len(c) for c in chunks] == [480000, 480000, 80000]


def test_wrong_mel_bins_for_ready_features():
    with pytest.raises(AudioError, match="128 mel bins; this model reads 80"):
        prepare_features(torch.zeros(1, 128, 3000), 80)
