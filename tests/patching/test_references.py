"""Reference inputs (hooked_asr/patching/references.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.patching import other_utterance, silence_like, white_noise_like
from hooked_asr.patching.references import rms


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
