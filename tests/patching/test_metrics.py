"""Text metrics of patched transcripts (hooked_asr/patching/metrics.py)."""

from __future__ import annotations

import pytest

from hooked_asr.patching import contains_word, word_error_rate, word_restored


def test_text_metrics():
    assert word_error_rate("the cat sat", "The cat sat.") == 0.0
    assert word_error_rate("the cat sat on", "the dog sat") == pytest.approx(2 / 4)  # 1 substitution + 1 deletion
    assert contains_word("I ate white rice.", "rice") and not contains_word("prices", "rice")
    assert word_restored("white lice", "lice", "rice") and not word_restored("white rice", "lice", "rice")
