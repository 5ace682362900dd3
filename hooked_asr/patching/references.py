"""Reference inputs for patching: what ``a_ref`` is recorded from.

Whisper pads every input to 30 s, so a reference of the *same length* as the target
keeps the padded region identical and only the speech region differs.

    white_noise_like(audio, seed=0)            # N(0, 1) scaled to the target's RMS
    white_noise_like(audio, seed=0, rms_level=0.01)  # a fixed RMS
    silence_like(audio)                        # zeros
    other_utterance(audio, other, align=...)   # another recording, cut or zero-padded to the same length
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from jaxtyping import Float


def _as_wave(audio: Any) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"references are built from 1-D audio at 16 kHz, got shape {a.shape}")
    return a


def rms(audio: Float[np.ndarray, "samples"]) -> float:
    """Root mean square ``sqrt(mean(x^2))``."""
    a = _as_wave(audio)
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
    a = _as_wave(audio)
    noise = np.random.default_rng(seed).standard_normal(a.size)
    level = rms_level if rms_level is not None else (rms(a) if rms_match else 1.0)
    cur = float(np.sqrt(np.mean(noise**2))) if noise.size else 1.0
    return (noise * (level / cur if cur > 0 else 0.0)).astype(np.float32)


def silence_like(audio: Float[np.ndarray, "samples"]) -> Float[np.ndarray, "samples"]:
    """Zeros of the same length (log-mel of silence is the constant floor); a patching reference
    "like" the target (:func:`hooked_asr.datasets.silence` makes a clip of a given length)."""
    return np.zeros_like(_as_wave(audio))


def other_utterance(
    audio: Float[np.ndarray, "samples"], other: Float[np.ndarray, "samples2"], align: Literal["cut", "keep"] = "cut"
) -> Float[np.ndarray, "samples"]:
    """Another recording as the reference. ``align='cut'`` cuts or zero-pads it to the
    target's length; ``'keep'`` returns it unchanged (positions may then differ: patching
    handles that with its ``missing=`` policy)."""
    a, o = _as_wave(audio), _as_wave(other)
    if align == "keep":
        return o
    if align != "cut":
        raise ValueError(f"align must be 'cut' or 'keep', got {align!r}")
    out = np.zeros_like(a)
    out[: min(a.size, o.size)] = o[: a.size]
    return out


def make_reference(kind: str, audio: Any, seed: int = 0, other: Any = None, rms_match: bool = True) -> np.ndarray:
    """``kind`` in ``noise``, ``silence``, ``other`` (needs ``other``)."""
    if kind in ("noise", "white_noise"):
        return white_noise_like(audio, seed=seed, rms_match=rms_match)
    if kind == "silence":
        return silence_like(audio)
    if kind == "other":
        if other is None:
            raise ValueError("reference kind 'other' needs the other utterance: make_reference('other', audio, other=...)")
        return other_utterance(audio, other)
    raise ValueError(f"unknown reference kind {kind!r}; use 'noise', 'silence' or 'other'")


__all__ = ["make_reference", "other_utterance", "rms", "silence_like", "white_noise_like"]
