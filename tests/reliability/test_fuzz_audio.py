"""Fuzz transcribe's audio input: random dtypes, shapes, containers, sample rates, lengths,
NaN/inf and silence levels. Every case gives a transcript, or an AudioError whose message
names one of the causes the case holds; never another exception type, never a refusal of
valid audio. (A seeded loop rather than hypothesis: deterministic, no extra dependency.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from hooked_asr.audio import AudioError

KEYWORDS = {  # cause -> what its message must say
    "rate": "sampling",
    "dtype": "dtype",
    "shape": "shape|dimensions|mel bins|features",  # a 3-D tensor is read as features
    "empty": "empty",
    "nonfinite": "NaN",
    "int16_range": "int16",
    "silent": "silent",
}
DTYPES = ["float32", "float64", "float16", "int16", "int32", "uint8", "bool", "complex64"]
RATES = [None, 16000, 8000, 44100, 22050.0, np.int32(16000), 16000.5, "16000", 0, -8000, True]
LENGTHS = [0, 1, 37, 4000, 16000, 16000 * 31]
AMPS = [0.0, 1e-9, 1e-5, 1e-3, 0.3, 1.5, 30000.0]
SHAPES = ["1d", "row", "col", "two_rows", "two_cols", "scalar", "3d"]
CONTAINERS = ["numpy", "torch", "list"]


def _case(rng: np.random.Generator) -> dict:
    if rng.random() < 0.3:  # near the valid region, so that transcription is exercised often
        return dict(
            dtype=str(rng.choice(["float32", "float64", "float16", "int16"])),
            rate=[None, 16000, 8000, 44100, 22050.0][rng.integers(5)],
            n=int(rng.choice([37, 4000, 16000])),
            amp=float(rng.choice([1e-3, 0.3, 1.5])),
            shape=str(rng.choice(["1d", "row", "col"])),
            container=str(rng.choice(CONTAINERS)),
            nonfinite=False,
            seed=int(rng.integers(1 << 30)),
        )
    return dict(
        dtype=str(rng.choice(DTYPES)),
        rate=RATES[rng.integers(len(RATES))],
        n=int(rng.choice(LENGTHS)),
        amp=float(rng.choice(AMPS)),
        shape=str(rng.choice(SHAPES)),
        container=str(rng.choice(CONTAINERS)),
        nonfinite=bool(rng.random() < 0.15),
        seed=int(rng.integers(1 << 30)),
    )


def _build(c: dict):
    """The input and the set of causes that make it invalid (empty: it must transcribe)."""
    rng = np.random.default_rng(c["seed"])
    n, causes = c["n"], set()
    t = np.arange(n) / 16000
    x = c["amp"] * np.sin(2 * np.pi * 300 * t) * (0.6 + 0.4 * rng.random(n))
    if c["nonfinite"] and n:
        x[rng.integers(n)] = rng.choice([np.nan, np.inf, -np.inf])
        causes.add("nonfinite")
    dtype = np.dtype(c["dtype"])
    if c["container"] == "list":
        dtype = np.dtype("float64")  # a list holds Python floats
    if dtype == np.int16:
        x = np.nan_to_num(np.clip(x, -1, 1)) * 32767  # int16 audio in its own range
        causes.discard("nonfinite")
    with np.errstate(invalid="ignore"):
        arr = x.astype(dtype) if dtype.kind != "b" else x > 0
    if dtype.kind not in "f" and dtype != np.int16:
        causes.add("dtype")
    scaled = (
        arr.astype(np.float64) / 32768
        if dtype == np.int16
        else arr.astype(np.float64, copy=False)
        if dtype.kind == "f"
        else None
    )
    shape = c["shape"] if c["container"] != "list" else "1d"
    if shape == "row":
        arr = arr[None]
    elif shape == "col":
        arr = arr[:, None]
    elif shape == "two_rows":
        arr = np.stack([arr, arr])
        causes.add("shape")
    elif shape == "two_cols":
        arr = np.stack([arr, arr], axis=1)
        causes.add("shape")
    elif shape == "scalar":
        arr = arr[0] if n else np.float32(0.5)
        arr = np.asarray(arr)
        causes.add("shape")
    elif shape == "3d":
        arr = np.stack([np.stack([arr] * 3)] * 2)
        causes.add("shape")
    rate = c["rate"]
    if (
        isinstance(rate, (bool, str))
        or (isinstance(rate, float) and rate != int(rate))
        or (isinstance(rate, (int, np.integer)) and rate <= 0)
    ):
        causes.add("rate")
    sr = 16000 if rate is None or "rate" in causes else int(rate)
    if n == 0:
        causes.add("empty")
    if scaled is not None and n:
        finite = scaled[np.isfinite(scaled)]
        peak = float(np.abs(finite).max()) if finite.size else 0.0
        if peak > 2.0:
            causes.add("int16_range")
        elif peak < 1e-4:
            causes.add("silent")
    # audio longer than 30 s is no cause for refusal: transcribe walks it window by window (issue 12)
    if c["container"] == "torch":
        try:
            audio = torch.from_numpy(arr.copy())  # (np.ascontiguousarray would make a 0-d array 1-d)
        except TypeError:
            audio = arr  # a dtype torch lacks: the numpy array itself
    elif c["container"] == "list":
        audio = arr.tolist()
    else:
        audio = arr
    return audio, rate, causes


def test_fuzz_audio_inputs(audio_whisper):
    rng = np.random.default_rng(2024)
    seen = {"transcribed": 0, "refused": 0}
    for i in range(100):
        c = _case(rng)
        audio, rate, causes = _build(c)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = audio_whisper.transcribe(audio, sampling_rate=rate, max_new_tokens=2)
        except AudioError as e:
            msg = str(e)
            assert causes, f"case {i} {c}: valid audio refused: {msg}"
            pattern = "|".join(KEYWORDS[k] for k in causes)
            import re

            assert re.search(pattern, msg), f"case {i} {c}: message names none of {sorted(causes)}: {msg}"
            seen["refused"] += 1
        except Exception as e:  # the property under test: no other exception type escapes
            pytest.fail(f"case {i} {c}: {type(e).__name__}: {e}")
        else:
            assert not causes, f"case {i} {c}: accepted although {sorted(causes)}"
            assert type(out).__name__ == "TranscriptionResult" and isinstance(out.tokens, list)
            seen["transcribed"] += 1
    # Both outcomes were exercised, so the loop tested something.
    assert seen["transcribed"] >= 15 and seen["refused"] >= 40, seen
