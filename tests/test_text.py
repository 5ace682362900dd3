"""Word error rate against jiwer, an independent implementation, on random sentences."""

from __future__ import annotations

import random

import jiwer
import pytest

from hooked_asr.text import corpus_word_error_rate, edit_distance, normalize_text, word_error_rate

VOCAB = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "red", "it's"]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 9)))


def test_wer_equals_jiwer_on_random_pairs():
    rng = random.Random(0)
    for _ in range(200):
        ref, hyp = _sentence(rng), _sentence(rng)
        assert word_error_rate(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp), abs=1e-12)


def test_corpus_wer_equals_jiwer_corpus():
    rng = random.Random(1)
    refs = [_sentence(rng) for _ in range(30)]
    hyps = [_sentence(rng) for _ in range(30)]
    assert corpus_word_error_rate(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)


def test_normalisation_ignores_case_and_punctuation_only():
    assert normalize_text("Hello, World!  It's   me.") == "hello world it's me"
    assert word_error_rate("Hello, world.", "hello world") == 0.0
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "x") == 1.0
    assert edit_distance("kitten", "sitting") == 3


def test_corpus_wer_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_word_error_rate(["a", "b"], ["a"])


def test_corpus_word_error_rate_ignores_case_and_punctuation():
    assert corpus_word_error_rate(["Hello, world."], ["hello world"]) == 0.0
    assert corpus_word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)
