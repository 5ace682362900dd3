"""Non-speech audio built from numbers: coloured noise, tones, chirps, synthetic music, and
speech + noise mixed at an exact signal-to-noise ratio.

Every generator returns float32 mono at 16 kHz, deterministic in its seed, scaled so that
its peak is ``peak`` (0.5 unless told; a silent signal stays silent, never divided by 0).

Noise colours are shaped in the frequency domain: white noise's spectrum is multiplied by
``f ** (-alpha / 2)`` so the power spectral density falls as ``1 / f ** alpha``: white
``alpha = 0``, pink ``alpha = 1`` (-3 dB per octave), brown ``alpha = 2`` (-6 dB per octave).
The DC bin is zeroed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from jaxtyping import Float

from hooked_asr.audio import SAMPLE_RATE

DEFAULT_PEAK = 0.5
NONSPEECH_KINDS = ("white", "pink", "brown", "tone", "chirp", "music")

Seed = int | np.random.Generator | None


def _rng(seed: Seed, rng: np.random.Generator | None = None) -> np.random.Generator:
    if rng is not None:
        return rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _n_samples(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive finite number, got {seconds}")
    return max(1, int(round(seconds * SAMPLE_RATE)))


def normalize_peak(audio: np.ndarray, peak: float = DEFAULT_PEAK) -> Float[np.ndarray, "samples"]:
    """Scale so that ``max |audio| == peak``; an all-zero signal is returned unchanged."""
    if not 0 < peak <= 1:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    a = np.asarray(audio, dtype=np.float64)
    m = float(np.abs(a).max()) if a.size else 0.0
    if m == 0.0 or not math.isfinite(m):
        if not math.isfinite(m):
            raise ValueError("audio has NaN/inf samples")
        return a.astype(np.float32)
    return (a * (peak / m)).astype(np.float32)


def coloured_noise(
    seconds: float, alpha: float, seed: Seed = 0, *, rng: np.random.Generator | None = None, peak: float = DEFAULT_PEAK
) -> Float[np.ndarray, "samples"]:
    """Gaussian noise whose power spectral density falls as ``1 / f ** alpha``."""
    n = _n_samples(seconds)
    g = _rng(seed, rng)
    if alpha == 0:
        return normalize_peak(g.standard_normal(n), peak)
    spec = np.fft.rfft(g.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    scale = np.zeros_like(f)
    scale[1:] = f[1:] ** (-alpha / 2.0)
    return normalize_peak(np.fft.irfft(spec * scale, n), peak)


def white_noise(
    seconds: float, seed: Seed = 0, *, rng: np.random.Generator | None = None, peak: float = DEFAULT_PEAK
) -> Float[np.ndarray, "samples"]:
    """Gaussian white noise (flat spectrum)."""
    return coloured_noise(seconds, 0.0, seed, rng=rng, peak=peak)


def pink_noise(
    seconds: float, seed: Seed = 0, *, rng: np.random.Generator | None = None, peak: float = DEFAULT_PEAK
) -> Float[np.ndarray, "samples"]:
    """Pink noise: PSD ~ 1/f (-3 dB per octave)."""
    return coloured_noise(seconds, 1.0, seed, rng=rng, peak=peak)


def brown_noise(
    seconds: float, seed: Seed = 0, *, rng: np.random.Generator | None = None, peak: float = DEFAULT_PEAK
) -> Float[np.ndarray, "samples"]:
    """Brown (red) noise: PSD ~ 1/f^2 (-6 dB per octave)."""
    return coloured_noise(seconds, 2.0, seed, rng=rng, peak=peak)


def _check_freq(name: str, f: float) -> None:
    if not math.isfinite(f) or not 0 < f < SAMPLE_RATE / 2:
        raise ValueError(f"{name} must be in (0, {SAMPLE_RATE // 2}) Hz (below Nyquist at 16 kHz), got {f}")


def _fade(a: np.ndarray, fade_s: float) -> np.ndarray:
    k = min(int(fade_s * SAMPLE_RATE), a.size // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        a[:k] *= ramp
        a[-k:] *= ramp[::-1]
    return a


def tone(
    freq: float, seconds: float, peak: float = DEFAULT_PEAK, fade_s: float = 0.01, phase: float = 0.0
) -> Float[np.ndarray, "samples"]:
    """A pure sine at ``freq`` Hz with ``fade_s`` raised-cosine fades (no clicks)."""
    _check_freq("freq", freq)
    t = np.arange(_n_samples(seconds)) / SAMPLE_RATE
    return normalize_peak(_fade(np.sin(2 * np.pi * freq * t + phase), fade_s), peak)


def chirp(
    f0: float, f1: float, seconds: float, method: str = "linear", peak: float = DEFAULT_PEAK, fade_s: float = 0.01
) -> Float[np.ndarray, "samples"]:
    """A sweep from ``f0`` to ``f1`` Hz (``method``: ``"linear"`` or ``"logarithmic"``, as scipy's)."""
    from scipy.signal import chirp as _chirp

    _check_freq("f0", f0)
    _check_freq("f1", f1)
    if method not in ("linear", "logarithmic"):
        raise ValueError(f"method must be 'linear' or 'logarithmic', got {method!r}")
    n = _n_samples(seconds)
    t = np.arange(n) / SAMPLE_RATE
    return normalize_peak(_fade(_chirp(t, f0, max(t[-1], 1.0 / SAMPLE_RATE), f1, method=method), fade_s), peak)


def synthetic_music(
    seconds: float,
    seed: Seed = 0,
    *,
    rng: np.random.Generator | None = None,
    peak: float = DEFAULT_PEAK,
    n_voices: int = 2,
) -> Float[np.ndarray, "samples"]:
    """A few notes from a pentatonic scale, each with 5 decaying harmonics and an
    attack-decay-sustain-release envelope; ``n_voices`` overlapping melodic lines."""
    n = _n_samples(seconds)
    g = _rng(seed, rng)
    out = np.zeros(n)
    scale = np.array([0, 2, 4, 7, 9])  # major pentatonic, semitones
    for _ in range(max(1, n_voices)):
        pos = int(g.integers(0, max(1, n // 10)))
        root = 48 + int(g.integers(0, 12))  # MIDI C3..B3
        while pos < n:
            dur = int(g.uniform(0.15, 0.6) * SAMPLE_RATE)
            midi = root + scale[int(g.integers(len(scale)))] + 12 * int(g.integers(0, 2))
            f = 440.0 * 2 ** ((midi - 69) / 12)
            m = min(dur, n - pos)
            t = np.arange(m) / SAMPLE_RATE
            note = sum(
                (0.6**h) * np.sin(2 * np.pi * f * (h + 1) * t) for h in range(5) if f * (h + 1) < SAMPLE_RATE / 2
            )
            a, r = max(1, int(0.01 * SAMPLE_RATE)), max(1, int(0.05 * SAMPLE_RATE))
            env = np.exp(-3.0 * t / max(dur / SAMPLE_RATE, 1e-3)) * 0.7 + 0.3
            env[: min(a, m)] *= np.linspace(0, 1, min(a, m))
            rr = min(r, m)
            env[m - rr :] *= np.linspace(1, 0, rr)
            out[pos : pos + m] += note * env
            pos += dur + int(g.uniform(0.0, 0.1) * SAMPLE_RATE)
    return normalize_peak(out, peak)


def silence(seconds: float) -> Float[np.ndarray, "samples"]:
    """All zeros (note: :func:`hooked_asr.audio.load_audio` rejects silence unless ``allow_silence``)."""
    return np.zeros(_n_samples(seconds), dtype=np.float32)


def signal_power(x: np.ndarray) -> float:
    """Mean square of ``x`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x**2)) if x.size else 0.0


def measure_snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(P_signal / P_noise)``, powers as mean squares."""
    return 10.0 * math.log10(signal_power(signal) / signal_power(noise))


def _wave(audio) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected 1-D audio at 16 kHz, got shape {a.shape}")
    return a


def rms(audio: Float[np.ndarray, "samples"]) -> float:
    """Root mean square ``sqrt(mean(x^2))``."""
    a = _wave(audio)
    return float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) if a.size else 0.0


def white_noise_like(
    audio: Float[np.ndarray, "samples"], seed: int = 0, rms_match: bool = True, rms_level: float | None = None
) -> Float[np.ndarray, "samples"]:
    """Gaussian white noise with as many samples as ``audio`` (a patching reference "like" the
    target; :func:`hooked_asr.datasets.white_noise` makes a clip of a given length instead).

    ``rms_match=True`` scales it to the RMS of ``audio`` (``rms_level`` overrides with a
    fixed RMS); ``rms_match=False`` and no level gives unit variance. The same seed always
    gives the same noise.
    """
    a = _wave(audio)
    noise = np.random.default_rng(seed).standard_normal(a.size)
    level = rms_level if rms_level is not None else (rms(a) if rms_match else 1.0)
    cur = float(np.sqrt(np.mean(noise**2))) if noise.size else 1.0
    return (noise * (level / cur if cur > 0 else 0.0)).astype(np.float32)


def mix_at_snr(
    speech: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    *,
    max_peak: float = 0.99,
    return_components: bool = False,
) -> Float[np.ndarray, "samples"] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``speech + g * noise`` with ``10 log10(P_speech / P(g * noise)) == snr_db``.

    Powers are mean squares over the speech's length: ``noise`` is tiled if shorter and cut
    if longer. If the mixture would peak above ``max_peak`` both parts are scaled down
    together (the SNR is unchanged). With ``return_components`` returns
    ``(mixed, speech_part, noise_part)`` where ``mixed == speech_part + noise_part``
    up to float32 rounding.
    """
    if not isinstance(snr_db, (int, float, np.integer, np.floating)) or not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    s = np.asarray(speech, dtype=np.float64)
    z = np.asarray(noise, dtype=np.float64)
    if s.ndim != 1 or z.ndim != 1:
        raise ValueError(f"speech and noise must be 1-D, got shapes {s.shape} and {z.shape}")
    if s.size == 0 or z.size == 0:
        raise ValueError("speech and noise must be non-empty")
    if z.size < s.size:
        z = np.tile(z, -(-s.size // z.size))
    z = z[: s.size]
    ps, pz = signal_power(s), signal_power(z)
    if ps == 0.0:
        raise ValueError("speech is silent (zero power): the SNR is undefined")
    if pz == 0.0:
        raise ValueError("noise is silent (zero power) over the speech's length: the SNR is undefined")
    z = z * math.sqrt(ps / (pz * 10.0 ** (float(snr_db) / 10.0)))
    mixed = s + z
    m = float(np.abs(mixed).max())
    if m > max_peak:
        k = max_peak / m
        s, z, mixed = s * k, z * k, mixed * k
    if return_components:
        return mixed.astype(np.float32), s.astype(np.float32), z.astype(np.float32)
    return mixed.astype(np.float32)


def nonspeech_clip(
    kind: str, seconds: float, seed: int = 0, peak: float = DEFAULT_PEAK
) -> Float[np.ndarray, "samples"]:
    """One clip of ``kind`` (one of :data:`NONSPEECH_KINDS`); tone and chirp frequencies and
    the notes of ``music`` are drawn from ``seed`` (tones 100-2000 Hz log-uniform, chirps
    between 100 and 4000 Hz, up or down)."""
    g = np.random.default_rng(seed)
    makers: dict[str, Callable[[], np.ndarray]] = {
        "white": lambda: white_noise(seconds, rng=g, peak=peak),
        "pink": lambda: pink_noise(seconds, rng=g, peak=peak),
        "brown": lambda: brown_noise(seconds, rng=g, peak=peak),
        "tone": lambda: tone(float(np.exp(g.uniform(np.log(100), np.log(2000)))), seconds, peak=peak),
        "chirp": lambda: chirp(
            *[float(x) for x in np.exp(g.uniform(np.log(100), np.log(4000), 2))],
            seconds,
            method="logarithmic",
            peak=peak,
        ),
        "music": lambda: synthetic_music(seconds, rng=g, peak=peak),
    }
    if kind not in makers:
        raise ValueError(f"unknown non-speech kind {kind!r}; valid kinds: {', '.join(NONSPEECH_KINDS)}")
    return makers[kind]()


__all__ = [
    "rms",
    "white_noise_like",
    "NONSPEECH_KINDS",
    "brown_noise",
    "chirp",
    "coloured_noise",
    "mix_at_snr",
    "nonspeech_clip",
    "normalize_peak",
    "pink_noise",
    "signal_power",
    "silence",
    "measure_snr_db",
    "synthetic_music",
    "tone",
    "white_noise",
]
