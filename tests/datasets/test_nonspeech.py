"""Non-speech generators: determinism, spectra, exact SNR mixing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import welch

from hooked_asr.datasets.nonspeech import (
    NONSPEECH_KINDS,
    brown_noise,
    chirp,
    measure_snr_db,
    mix_at_snr,
    nonspeech_clip,
    normalize_peak,
    pink_noise,
    synthetic_music,
    tone,
    white_noise,
)

SR = 16000


def _slope(x: np.ndarray) -> float:
    """Slope of log10 PSD against log10 frequency between 50 Hz and 4 kHz (Welch)."""
    f, p = welch(x.astype(np.float64), fs=SR, nperseg=4096)
    band = (f >= 50) & (f <= 4000)
    return float(np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0])


@pytest.mark.parametrize("fn", [white_noise, pink_noise, brown_noise, synthetic_music])
def test_deterministic_float32_peak_normalised(fn):
    a, b, c = fn(1.5, seed=3), fn(1.5, seed=3), fn(1.5, seed=4)
    assert a.dtype == np.float32 and a.shape == (24000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_array_equal(fn(1.0, rng=np.random.default_rng(7)), fn(1.0, seed=7))


@pytest.mark.parametrize("fn,alpha", [(white_noise, 0.0), (pink_noise, 1.0), (brown_noise, 2.0)])
def test_noise_colour_spectral_slope(fn, alpha):
    slope = _slope(fn(8.0, seed=0))
    assert slope == pytest.approx(-alpha, abs=0.1)
    # the same in dB per octave: 0, -3, -6
    assert 10 * slope * math.log10(2) == pytest.approx(-3.01 * alpha, abs=0.35)


def test_tone_and_chirp_frequencies():
    x = tone(440.0, 1.0)
    spec = np.abs(np.fft.rfft(x))
    assert np.fft.rfftfreq(x.size, 1 / SR)[spec.argmax()] == pytest.approx(440.0, abs=1.0)
    assert abs(x[0]) < 1e-6 and abs(x[-1]) < 1e-3  # faded in and out: no clicks
    c = chirp(200.0, 3000.0, 2.0)

    def dominant(seg):
        s = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
        return np.fft.rfftfreq(seg.size, 1 / SR)[s.argmax()]

    assert dominant(c[1000:3000]) < 400 and dominant(c[-3000:-1000]) > 2600
    with pytest.raises(ValueError, match="below Nyquist"):
        tone(9000.0, 1.0)
    with pytest.raises(ValueError, match="method"):
        chirp(100, 200, 1.0, method="cubic")
    with pytest.raises(ValueError, match="seconds"):
        white_noise(0.0)


def test_music_is_harmonic_and_not_noise():
    m = synthetic_music(3.0, seed=1)
    f, p = welch(m.astype(np.float64), fs=SR, nperseg=4096)
    # tonal: power concentrates in a few peaks; the top 2% of bins hold most of it
    top = np.sort(p)[::-1][: max(1, p.size // 50)]
    assert top.sum() / p.sum() > 0.6
    assert np.abs(m).max() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("snr", [-10.0, 0.0, 5.0, 20.0])
def test_mix_at_snr_realises_the_snr(snr):
    rng = np.random.default_rng(0)
    speech = (0.3 * np.sin(np.linspace(0, 400, 20000)) * rng.uniform(0.2, 1.0, 20000)).astype(np.float32)
    noise = pink_noise(0.7, seed=2)  # shorter than the speech: tiled
    mixed, s, z = mix_at_snr(speech, noise, snr, return_components=True)
    assert mixed.dtype == np.float32 and mixed.shape == speech.shape
    assert measure_snr_db(s, z) == pytest.approx(snr, abs=0.1)
    np.testing.assert_allclose(mixed, s + z, atol=1e-6)
    assert np.abs(mixed).max() <= 0.99 + 1e-6
    if np.abs(mixed).max() < 0.98:  # not rescaled: the speech part is the speech itself
        np.testing.assert_allclose(s, speech, atol=1e-7)
    # the plain return equals the first component
    np.testing.assert_array_equal(mix_at_snr(speech, noise, snr), mixed)


def test_mix_at_snr_errors():
    s = np.ones(100, np.float32) * 0.1
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite"):
            mix_at_snr(s, white_noise(0.1), bad)
    with pytest.raises(ValueError, match="speech is silent"):
        mix_at_snr(np.zeros(100, np.float32), white_noise(0.1), 0.0)
    with pytest.raises(ValueError, match="noise is silent"):
        mix_at_snr(s, np.zeros(50, np.float32), 0.0)


def test_dispatcher_and_safe_normalisation():
    for kind in NONSPEECH_KINDS:
        a, b = nonspeech_clip(kind, 0.5, seed=1), nonspeech_clip(kind, 0.5, seed=1)
        assert a.shape == (8000,) and a.dtype == np.float32 and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, nonspeech_clip(kind, 0.5, seed=2))
        assert np.abs(a).max() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="valid kinds: white, pink, brown, tone, chirp, music"):
        nonspeech_clip("violin", 1.0)
    z = normalize_peak(np.zeros(10))
    assert z.dtype == np.float32 and not z.any()
