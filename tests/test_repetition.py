"""Repetition loops: detection on constructed sequences, and the input builders' maths."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hooked_asr.repetition import (
    SAMPLE_RATE,
    Loop,
    add_white_noise,
    code_switch,
    excess_repeats,
    find_loops,
    find_repetition_loop,
    fragment,
    has_loop,
    is_repetition_failure,
    is_runaway,
    loop_resolved,
    repeated_count,
    repeated_word,
)


def test_loops_in_constructed_sequences():
    assert find_loops([1, 2, 3, 4]) == []
    assert find_loops([5, 5, 5]) == [Loop(0, (5,), 3)]
    assert find_loops([5, 5]) == []  # two copies are not a loop at min_repeats=3
    # a 2-gram repeated 4 times after a prefix, then a tail
    seq = [9, 1, 2, 1, 2, 1, 2, 1, 2, 7]
    assert find_loops(seq) == [Loop(1, (1, 2), 4)]
    # the shortest period wins when two cover the same span
    assert find_loops([3] * 6) == [Loop(0, (3,), 6)]
    # two separate loops
    assert find_loops("go go go now stop it stop it stop it") == [Loop(0, ("go",), 3), Loop(4, ("stop", "it"), 3)]


def test_repeated_count_and_excess():
    text = "the the the cat sat sat sat sat"
    assert repeated_count(text) == 2 + 3
    spoken = "the cat sat sat sat"
    assert excess_repeats(text, spoken) == 5 - 2
    assert excess_repeats("hello hello hello", "hello hello hello") == 0
    assert has_loop("a b a b a b") and not has_loop("a b a b")


def test_runaway_needs_the_loop_to_reach_the_length_limit():
    looped = [1, 2, 3, 4, 5, 4, 5, 4, 5, 4]
    assert is_runaway(looped, finished=False)
    assert not is_runaway(looped, finished=True)
    assert not is_runaway([4, 5, 4, 5, 4, 5, 1, 2, 3], finished=False)
    assert is_repetition_failure("a", tokens=looped, finished=False)
    assert is_repetition_failure("go go go go go", "go go go")
    assert not is_repetition_failure("go go go", "go go go")
    assert loop_resolved(True, False) and not loop_resolved(True, True) and not loop_resolved(False, False)


def test_white_noise_meets_the_snr():
    rng = np.random.default_rng(0)
    audio = (0.02 * rng.standard_normal(32000)).astype(np.float32)  # quiet: no anti-clipping rescale
    for snr in (-5.0, 0.0, 10.0):
        noisy = add_white_noise(audio, snr, seed=1)
        noise = noisy.astype(np.float64) - audio
        assert 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise**2)) == pytest.approx(snr, abs=1e-3)
    assert np.array_equal(add_white_noise(audio, 0, seed=3), add_white_noise(audio, 0, seed=3))


def test_fragment_keeps_segments_in_order_with_gaps():
    audio = np.arange(1, 16001, dtype=np.float32)  # 1 s, every sample distinct and non-zero
    out = fragment(audio, segment_s=0.1, drop=0.5, gap_s=0.05, seed=2)
    nz = out[out != 0]
    assert np.all(np.diff(nz) > 0)  # kept samples appear in their original order
    n_seg = 1600
    kept = len(nz) // n_seg
    assert len(nz) % n_seg == 0 and 1 <= kept < 10
    assert len(out) == kept * n_seg + (kept - 1) * int(0.05 * SAMPLE_RATE)


def test_builders_use_the_given_synthesizer():
    calls = []

    def fake(text, voice="en-us"):
        calls.append((text, voice))
        return np.full(len(text) * 10, 0.5, dtype=np.float32)

    audio, text = repeated_word("go", 4, synthesize=fake)
    assert text == "go go go go" and calls[-1] == ("go go go go", "en-us") and len(audio) == 110
    audio, text = code_switch([("hello there", "en-us"), ("hola", "es")], gap_s=0.01, synthesize=fake)
    assert calls[-2:] == [("hello there", "en-us"), ("hola", "es")]
    assert text == "hello there hola" and len(audio) == 110 + 160 + 40


def test_one_loop_rule_for_the_encoder_lens_and_the_metrics():
    # The lens's loop flag and the patching metrics read the same detector: three copies of
    # a short block are a loop for both (the lens once demanded six tokens and disagreed).
    import hooked_asr.lens.encoder as lens_encoder
    from hooked_asr.repetition import find_loops

    assert lens_encoder.find_loops is find_loops
    assert find_repetition_loop([5, 5, 5]) == (1, 3)
    rng = random.Random(0)
    for _ in range(300):
        seq = [rng.randrange(3) for _ in range(rng.randrange(0, 14))]
        got = find_repetition_loop(seq)
        loops = find_loops(seq)
        assert (got is not None) == bool(loops)
        if loops:
            best = max(loops, key=lambda lp: lp.length)
            assert got[0] * got[1] == best.length


def test_find_repetition_loop_on_constructed_sequences():
    assert find_repetition_loop([1, 2, 1, 2, 1, 2]) == (2, 3)
    assert find_repetition_loop([9, 9, 9, 9, 9, 9, 9]) == (1, 7)
    assert find_repetition_loop([5, 6, 5, 6, 7]) is None  # said twice is not a loop
    assert find_repetition_loop([1, 2, 3, 1, 2, 3, 1, 2, 3, 4]) == (3, 3)
    assert find_repetition_loop([]) is None
