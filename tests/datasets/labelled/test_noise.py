"""Speech vs non-speech of matched duration, and clean vs noisy speech at the asked SNR."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.labelled import SENTENCES, noisy_dataset, speech_nonspeech_dataset
from hooked_asr.datasets.nonspeech import measure_snr_db, mix_at_snr, nonspeech_clip

SR = 16000


def test_speech_nonspeech_matched_durations():
    ds = speech_nonspeech_dataset(6, seed=0, progress=False)
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 6)
    assert ds.label_names == ["nonspeech", "speech"]
    kinds = set()
    for j in range(6):
        other, speech = ds[2 * j], ds[2 * j + 1]
        assert other["audio"].size == speech["audio"].size and other["seconds"] == speech["seconds"]
        assert speech["kind"] == "speech" and speech["text"] in SENTENCES and other["text"] == ""
        kinds.add(other["kind"])
        assert 0.19 < np.abs(other["audio"]).max() < 0.81
    assert len(kinds) == 6  # six pairs: each of the six kinds once


def test_noisy_realised_snr():
    ds = noisy_dataset(3, snr_db=5.0, seed=0, progress=False)
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 3)
    for j in range(3):
        clean, noisy = ds[2 * j], ds[2 * j + 1]
        assert (
            clean["text"] == noisy["text"] and clean["noise"] == "none" and noisy["noise"] in ("white", "pink", "brown")
        )
        noise = nonspeech_clip(noisy["noise"], clean["audio"].size / SR, noisy["clip_seed"])
        mixed, s, z = mix_at_snr(clean["audio"], noise, 5.0, return_components=True)
        np.testing.assert_array_equal(mixed, noisy["audio"])
        assert measure_snr_db(s, z) == pytest.approx(5.0, abs=0.1)
        # measured against the stored clean clip (rescaling, if any, is a common factor)
        k = float(np.dot(s, clean["audio"]) / np.dot(clean["audio"], clean["audio"]))
        assert measure_snr_db(k * clean["audio"], noisy["audio"] - k * clean["audio"]) == pytest.approx(5.0, abs=0.1)
