"""What every builder shares: argument checks, speaking rates, espeak-ng rendering, and
turning records + audio into a :class:`LabelledDataset` named by its parameters and content."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hooked_asr.audio import SAMPLE_RATE
from hooked_asr.datasets.labelled.dataset import LabelledDataset, digest, progress_bar


def check_n(n_per_class: int) -> int:
    """``n_per_class`` as an int, refusing bools, non-integers and values below 1."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    return int(n_per_class)


def check_choices(what: str, given: str | Sequence[str], valid: Iterable[str]) -> list[str]:
    """``given`` as a list of at least two distinct members of ``valid`` (the class names of a set)."""
    valid = list(valid)
    if isinstance(given, str):
        given = [given]
    given = list(given)
    bad = [g for g in given if g not in valid]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    if len(set(given)) != len(given):
        raise ValueError(f"{what}s repeat: {given}")
    if len(given) < 2:
        raise ValueError(f"a labelled dataset needs at least two {what}s, got {given}")
    return given


def check_kinds(what: str, given: Sequence[str], valid: Sequence[str]) -> list[str]:
    """``given`` as a non-empty list of members of ``valid`` (kinds may repeat: a cycle, a weighting)."""
    given = list(given)
    for k in given:
        if k not in valid:
            raise ValueError(f"unknown {what} {k!r}; valid kinds: {', '.join(valid)}")
    if not given:
        raise ValueError(f"no {what}s given; valid kinds: {', '.join(valid)}")
    return given


def sentence_plan(
    rng: np.random.Generator, n: int, n_sentences: int, rate_range: tuple[int, int]
) -> tuple[list[int], list[int]]:
    """``(sentence ids, rates)`` for ``n`` groups: the sentences in one seeded order (cycled when
    ``n`` exceeds them), and a speaking rate per group."""
    order = rng.permutation(n_sentences)
    rates = speaking_rates(rng, n, rate_range)
    return [int(order[j % n_sentences]) for j in range(n)], rates


def speaking_rates(rng: np.random.Generator, n: int, rate_range: tuple[int, int]) -> list[int]:
    """``n`` espeak-ng rates (words per minute) drawn uniformly from ``rate_range``, both ends included."""
    lo, hi = rate_range
    if not 80 <= lo <= hi <= 450:
        raise ValueError(f"rate_range must be (lo, hi) words per minute with 80 <= lo <= hi <= 450, got {rate_range}")
    return [int(x) for x in rng.integers(lo, hi + 1, size=n)]


def speak(text: str, voice: str, rate: int, pitch: int | None) -> np.ndarray:
    """``text`` said by espeak-ng (16 kHz float32)."""
    from hooked_asr.datasets.espeak import synthesize

    return synthesize(text, voice=voice, rate=rate, pitch=pitch)


def render(specs: list[dict[str, Any]], progress: bool, desc: str) -> list[np.ndarray]:
    """Each record's ``text`` said with its ``voice``, ``rate`` and optional ``pitch``."""
    return [speak(s["text"], s["voice"], s["rate"], s.get("pitch")) for s in progress_bar(specs, progress, desc)]


def params_str(params: Mapping[str, Any]) -> str:
    """``k=v,k=v`` with sequences as ``[a,b]``: the parameter part of a builder's ``dataset_id``."""

    def fmt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(map(str, v)) + "]"
        return str(v)

    return ",".join(f"{k}={fmt(v)}" for k, v in params.items())


def finish(
    name: str,
    params: Mapping[str, Any],
    records: list[dict[str, Any]],
    audio: list[np.ndarray],
    label_names: Sequence[str],
    label_key: str = "label",
) -> LabelledDataset:
    """Audio to float32, durations into records, id = builder(params)@digest(content)."""
    audio = [np.asarray(a, dtype=np.float32) for a in audio]
    for r, a in zip(records, audio):
        r["seconds"] = round(a.size / SAMPLE_RATE, 4)
    did = f"{name}({params_str(params)})@{digest(records, audio)}"
    return LabelledDataset(records, audio, label_names, did, label_key)


__all__ = [
    "check_choices",
    "check_kinds",
    "check_n",
    "finish",
    "params_str",
    "render",
    "sentence_plan",
    "speak",
    "speaking_rates",
]
