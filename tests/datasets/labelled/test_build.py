"""The builders' shared checks: errors name the bad value and what is valid."""

from __future__ import annotations

import pytest

from hooked_asr.datasets.labelled import (
    accent_dataset,
    gender_dataset,
    language_dataset,
    noisy_dataset,
    semantic_dataset,
    speech_nonspeech_dataset,
)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="n_per_class must be an integer >= 1"):
        gender_dataset(0)
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        gender_dataset(1, voices=("en-zz",))
    with pytest.raises(ValueError, match="unknown accent 'en-au'; valid: en-us, en-gb"):
        accent_dataset(("en-us", "en-au"), 1)
    with pytest.raises(ValueError, match="unknown language 'xx'; valid: en, de, fr, es"):
        language_dataset(("en", "xx"), 1)
    with pytest.raises(ValueError, match="unknown category 'tools'; valid: fruits, clothing"):
        semantic_dataset(("fruits", "tools"), 1)
    with pytest.raises(ValueError, match="too many"):
        semantic_dataset(("fruits", "colors"), 17)
    with pytest.raises(ValueError, match="finite"):
        noisy_dataset(1, snr_db=float("nan"))
    with pytest.raises(ValueError, match="valid kinds"):
        speech_nonspeech_dataset(1, kinds=("violin",))
