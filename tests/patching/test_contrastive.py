"""Contrastive audio pairs (hooked_asr/patching/contrastive.py): time-aligned clips, the clean prompt in
both runs, and a metric that flips between them on the real tiny.en."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.patching.contrastive import (
    contrastive_pairs,
    fit_duration,
    noise_burst,
    other_voice,
    speak_words,
    word_replaced,
    word_swap,
)

WORDS = ["he", "was", "reading", "a", "book"]


def test_fit_duration_gives_exactly_n_samples():
    for n in (2000, 5000, 9000):
        a = fit_duration("letter", n)
        assert a.shape == (n,) and np.abs(a).max() > 0.05


def test_pairs_differ_only_where_the_corruption_is():
    clip = speak_words(WORDS)
    for pair in (
        word_swap(WORDS, 4, "letter"),
        word_replaced(WORDS, 4, "noise"),
        word_replaced(WORDS, 4, "silence"),
        noise_burst(WORDS, 4),
    ):
        _, a, b = pair.spans[4]
        assert pair.clean.shape == pair.corrupt.shape and np.array_equal(pair.clean, clip.audio)
        assert np.array_equal(pair.clean[:a], pair.corrupt[:a]) and np.array_equal(pair.clean[b:], pair.corrupt[b:])
        assert not np.array_equal(pair.clean[a:b], pair.corrupt[a:b])
    v = other_voice(WORDS)
    assert v.corrupt.shape == v.clean.shape and not np.allclose(v.clean, v.corrupt)
    with pytest.raises(IndexError, match="outside the 5 words"):
        word_swap(WORDS, 7, "x")
    with pytest.raises(ValueError, match="unknown pair kinds"):
        contrastive_pairs(("swap",))


def test_word_swap_on_tiny_en_flips_the_logit_difference(whisper_tiny_en):
    m = whisper_tiny_en
    torch.set_num_threads(1)
    pair = word_swap(WORDS, 4, "letter")
    x = pair.inputs(m)
    # both runs read the same decoder tokens: the clean prompt and the clean text
    assert torch.equal(x.clean["decoder_input_ids"], x.corrupt["decoder_input_ids"])
    assert m.tokenizer.decode([x.clean_token]) == " book" and m.tokenizer.decode([x.corrupt_token]) == " letter"
    assert int(x.tokens[0, x.position + 1]) == x.clean_token
    clean, corrupt = x.values(m)
    assert clean > 5 and corrupt < -5
    # what the model transcribes: the swapped word, everything else the same
    assert m.transcribe(pair.clean).text.strip() == "He was reading a book."
    assert m.transcribe(pair.corrupt).text.strip() == "He was reading a letter."
