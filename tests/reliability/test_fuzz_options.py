"""Fuzz transcribe's options (issue 28: the fuzz test grows from audio to options): random
combinations of valid and invalid temperature, beam_size, best_of, patience, length_penalty,
max_new_tokens, initial_prompt and thresholds. Every case gives a transcript when all its
options are valid, or a ValueError naming one of its bad options before any decoding; never
another exception type (a TypeError or IndexError from inside the search), never a refusal of
valid options. A seeded loop, as the audio fuzz test."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

NAN, INF = float("nan"), float("inf")
VALID = {
    "temperature": [0, 0.0, 0.5, (0.0, 0.4), np.float32(0.3), [0.2]],
    "beam_size": [None, 1, 2, np.int64(2)],
    "best_of": [None, 1, 2],
    "patience": [None, 1.0, 2],
    "length_penalty": [None, 0.6, 1],
    "max_new_tokens": [1, 3, np.int32(2)],
    "initial_prompt": [None, [1, 2], (5,)],
    "compression_ratio_threshold": [None, 2.4],
    "logprob_threshold": [None, -1.0, -INF],
    "no_speech_threshold": [None, 0.6],
}
INVALID = {
    "temperature": [NAN, INF, -1, "0.5", (), [0, "x"], True, None, (0.0, NAN)],
    "beam_size": [0, -1, 2.5, "2", True],
    "best_of": [0, 2.5, "3", False],
    "patience": [NAN, INF, 0, -1, "1"],
    "length_penalty": [NAN, INF, -INF, "1"],
    "max_new_tokens": [0, -2, 2.5, "3", NAN],
    "initial_prompt": [b"x", bytearray(b"y"), [1.5], [-3], 5, [True]],
    "compression_ratio_threshold": [NAN, "2"],
    "logprob_threshold": [NAN, "x"],
    "no_speech_threshold": [NAN, [0.5]],
}
AUDIO = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 300 / 16000)).astype(np.float32)


def _case(rng: np.random.Generator) -> tuple[dict, set[str]]:
    opts, causes = {}, set()
    for name in VALID:
        if rng.random() < 0.08:
            pool = INVALID[name]
            opts[name] = pool[rng.integers(len(pool))]
            causes.add(name)
        else:
            pool = VALID[name]
            opts[name] = pool[rng.integers(len(pool))]
    if (
        opts["patience"] is not None
        and "patience" not in causes
        and not ("beam_size" not in causes and opts["beam_size"])
    ):
        causes.add("patience")  # patience needs a beam
    return opts, causes


def test_fuzz_transcribe_options(audio_whisper):
    rng = np.random.default_rng(28)
    seen = {"transcribed": 0, "refused": 0}
    for i in range(150):
        opts, causes = _case(rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = audio_whisper.transcribe(AUDIO, **opts)
        except ValueError as e:
            msg = str(e)
            assert causes, f"case {i} {opts}: valid options refused: {msg}"
            assert re.search("|".join(causes), msg), f"case {i} {opts}: message names none of {sorted(causes)}: {msg}"
            seen["refused"] += 1
        except Exception as e:  # the property under test: no other exception type escapes
            pytest.fail(f"case {i} {opts}: {type(e).__name__}: {e}")
        else:
            assert not causes, f"case {i} {opts}: accepted although {sorted(causes)} are bad"
            assert isinstance(out.tokens, list) and all(math.isfinite(s.avg_logprob) for s in out.segments)
            seen["transcribed"] += 1
    assert seen["transcribed"] >= 30 and seen["refused"] >= 30, seen
