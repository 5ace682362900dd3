"""Repetition loops: detection in transcripts and inputs that provoke them.

A *loop* is an n-gram (``n <= max_ngram``, 8) repeated back to back at least ``min_repeats``
(3) times (``w w w`` for ``n = 1``, ``a b a b a b`` for ``n = 2``). This is the package's one
loop rule: the encoder lens's flag, the patching metrics and the scripts all call
:func:`find_loops` (or :func:`find_repetition_loop`, its longest loop). No minimum length:
a word said three times is a loop; whether it is a *failure* is decided against what was said. Speech can repeat itself too
("very very very"), so the loop that matters is the one the model adds: compare against
the words actually spoken with :func:`excess_repeats`, or notice that decoding hit its
length limit inside a loop (:func:`is_runaway`).

Repetition-prone inputs (Section 4.5 of "Beyond Transcription"): one word said many
times, speech drowned in white noise, speech cut into fragments with gaps, and
code-switching between two espeak-ng voices.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np
from jaxtyping import Float

from hooked_asr.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Loop:
    """``ngram`` repeated ``repeats`` times starting at ``start``; spans ``length = n * repeats`` items."""

    start: int
    ngram: tuple
    repeats: int

    @property
    def length(self) -> int:
        return len(self.ngram) * self.repeats

    @property
    def extra(self) -> int:
        """Items beyond the first copy: ``n * (repeats - 1)``."""
        return len(self.ngram) * (self.repeats - 1)


def words(text: str | None) -> list[str]:
    """Lower-cased words without punctuation (the unit loops are counted in for text)."""
    return re.findall(r"[\w']+", (text or "").lower())


def _seq(x: str | Sequence[Hashable] | None) -> list:
    return words(x) if isinstance(x, str) or x is None else list(x)


def find_loops(
    seq: str | Sequence[Hashable], min_repeats: int = 3, max_ngram: int = 8, min_ngram: int = 1
) -> list[Loop]:
    """Non-overlapping loops, left to right.

    At each position take the n-gram size whose back-to-back copies cover the most items
    (ties: the shortest n-gram), if it repeats at least ``min_repeats`` times; then jump
    past the loop. ``seq`` is a token list or a text (split with :func:`words`).
    """
    if min_repeats < 2:
        raise ValueError(f"min_repeats must be >= 2 (one copy is not a repetition), got {min_repeats}")
    s = _seq(seq)
    loops: list[Loop] = []
    i = 0
    while i < len(s):
        best: Loop | None = None
        for n in range(min_ngram, max_ngram + 1):
            if i + n * min_repeats > len(s):
                break
            gram = tuple(s[i : i + n])
            r = 1
            while s[i + r * n : i + (r + 1) * n] == list(gram):
                r += 1
            if r >= min_repeats and (best is None or r * n > best.length):
                best = Loop(i, gram, r)
        if best is None:
            i += 1
        else:
            loops.append(best)
            i += best.length
    return loops


def find_repetition_loop(
    seq: str | Sequence[Hashable], min_repeats: int = 3, max_ngram: int = 8
) -> tuple[int, int] | None:
    """``(period, repeats)`` of the longest loop :func:`find_loops` finds, else None.

    ``[a b a b a b]`` -> ``(2, 3)``; a block said twice is not a loop. The same rule as
    :func:`find_loops` (it is a view of its answer), so the encoder lens and the patching
    metrics call the same things loops.
    """
    loops = find_loops(seq, min_repeats, max_ngram)
    if not loops:
        return None
    best = max(loops, key=lambda lp: (lp.length, -lp.start))
    return len(best.ngram), best.repeats


def has_loop(seq: str | Sequence[Hashable], min_repeats: int = 3, max_ngram: int = 8) -> bool:
    return bool(find_loops(seq, min_repeats, max_ngram))


def repeated_count(seq: str | Sequence[Hashable], min_repeats: int = 3, max_ngram: int = 8) -> int:
    """Number of items that repeat an earlier copy inside a loop: ``sum(n * (repeats - 1))``."""
    return sum(lp.extra for lp in find_loops(seq, min_repeats, max_ngram))


def excess_repeats(
    hypothesis: str | Sequence[Hashable],
    reference: str | Sequence[Hashable] | None = None,
    min_repeats: int = 3,
    max_ngram: int = 8,
) -> int:
    """Repeated items the model added: ``repeated_count(hyp) - repeated_count(ref)``, floored at 0."""
    ref = 0 if reference is None else repeated_count(reference, min_repeats, max_ngram)
    return max(0, repeated_count(hypothesis, min_repeats, max_ngram) - ref)


def is_runaway(tokens: Sequence[int], finished: bool, min_repeats: int = 3, max_ngram: int = 8) -> bool:
    """Decoding stopped at its length limit (``finished=False``) while inside a loop that reaches the end."""
    if finished:
        return False
    loops = find_loops(tokens, min_repeats, max_ngram)
    # A loop "reaches the end" if at most one partial copy follows it.
    return bool(loops) and len(tokens) - (loops[-1].start + loops[-1].length) < len(loops[-1].ngram)


def is_repetition_failure(
    hypothesis: str | Sequence[Hashable],
    reference: str | Sequence[Hashable] | None = None,
    tokens: Sequence[int] | None = None,
    finished: bool = True,
    min_repeats: int = 3,
    max_ngram: int = 8,
) -> bool:
    """The transcript loops beyond what was spoken, or decoding ran away in a loop."""
    runaway = tokens is not None and is_runaway(tokens, finished, min_repeats, max_ngram)
    return runaway or excess_repeats(hypothesis, reference, min_repeats, max_ngram) > 0


def loop_resolved(before: bool, after: bool) -> bool:
    """A failure that an intervention removed."""
    return bool(before) and not bool(after)


# ---- repetition-prone inputs ----------------------------------------------------------
def _synthesize(text: str, voice: str, synthesize: Callable[..., np.ndarray] | None) -> np.ndarray:
    if synthesize is None:
        try:
            from hooked_asr.datasets.espeak import synthesize
        except ImportError as e:  # pragma: no cover - depends on the datasets module
            raise ImportError(
                "speech synthesis needs hooked_asr.datasets.espeak (espeak-ng); or pass synthesize=fn(text, voice)"
            ) from e
    return np.asarray(synthesize(text, voice=voice), dtype=np.float32)


def repeated_word(
    word: str, n: int, voice: str = "en-us", synthesize: Callable[..., np.ndarray] | None = None
) -> tuple[Float[np.ndarray, "samples"], str]:
    """``(audio, text)`` of ``word`` said ``n`` times in one utterance."""
    text = " ".join([word] * n)
    return _synthesize(text, voice, synthesize), text


def add_white_noise(audio: Float[np.ndarray, "samples"], snr_db: float, seed: int = 0) -> Float[np.ndarray, "samples"]:
    """``audio + noise`` with ``10 log10(P_audio / P_noise) = snr_db`` (seeded Gaussian noise;
    :func:`hooked_asr.datasets.nonspeech.mix_at_snr` scales both down together if it would clip)."""
    from hooked_asr.datasets.nonspeech import mix_at_snr

    a = np.asarray(audio, dtype=np.float32)
    return mix_at_snr(a, np.random.default_rng(seed).standard_normal(a.size), snr_db).astype(np.float32)


def fragment(
    audio: Float[np.ndarray, "samples"],
    segment_s: float = 0.3,
    drop: float = 0.3,
    gap_s: float = 0.15,
    seed: int = 0,
) -> Float[np.ndarray, "samples2"]:
    """Cut into ``segment_s`` pieces, drop each with probability ``drop``, join the rest with ``gap_s`` of silence."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop is a probability in [0, 1), got {drop}")
    a = np.asarray(audio, dtype=np.float32)
    seg = max(1, int(segment_s * SAMPLE_RATE))
    rng = np.random.default_rng(seed)
    pieces = [a[i : i + seg] for i in range(0, a.size, seg)]
    kept = [p for p in pieces if rng.random() >= drop] or pieces[:1]
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([x for p in kept for x in (p, gap)][:-1])


def code_switch(
    segments: Sequence[tuple[str, str]], gap_s: float = 0.1, synthesize: Callable[..., np.ndarray] | None = None
) -> tuple[Float[np.ndarray, "samples"], str]:
    """``(audio, text)``: each ``(text, voice)`` spoken by its espeak-ng voice, in order."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    waves = [x for text, voice in segments for x in (_synthesize(text, voice, synthesize), gap)][:-1]
    return np.concatenate(waves), " ".join(t for t, _ in segments)


def repetition_prone_inputs(
    synthesize: Callable[..., np.ndarray] | None = None, seed: int = 0, n_per_kind: int = 4
) -> list[dict[str, Any]]:
    """A small set of inputs of the four kinds: ``{"id", "kind", "audio", "text"}``.

    ``text`` is what was said (for excess-repetition counts). Max 30 s each.
    """
    rng = np.random.default_rng(seed)
    vocab = ["go", "yes", "hello", "the", "one", "stop", "no", "right", "okay", "hey", "up", "run"]
    sentences = [
        "the quick brown fox jumps over the lazy dog",
        "please call stella and ask her to bring these things with her from the store",
        "we should meet again next week to finish the report",
        "the weather today is cold and windy with some rain in the evening",
        "she sells sea shells by the sea shore",
        "my favourite colour is green and my brother likes blue",
    ]
    foreign = [
        ("es", "el perro come la comida en la casa"),
        ("de", "der hund isst das essen im haus"),
        ("fr", "le chien mange la nourriture dans la maison"),
        ("it", "il cane mangia il cibo nella casa"),
    ]
    items: list[dict[str, Any]] = []
    for k in range(n_per_kind):
        word = vocab[int(rng.integers(len(vocab)))]
        audio, text = repeated_word(word, int(rng.integers(8, 20)), synthesize=synthesize)
        items.append(
            {"id": f"repeat-{k}-{word}", "kind": "repeated_word", "audio": audio[: 30 * SAMPLE_RATE], "text": text}
        )
    for k in range(n_per_kind):
        s = sentences[k % len(sentences)]
        clean = _synthesize(s, "en-us", synthesize)
        items.append(
            {
                "id": f"noise-{k}",
                "kind": "noised",
                "audio": add_white_noise(clean, float(rng.uniform(-10, 0)), seed + k),
                "text": s,
            }
        )
    for k in range(n_per_kind):
        s = sentences[(k + 2) % len(sentences)]
        clean = _synthesize(s, "en-us", synthesize)
        items.append(
            {
                "id": f"fragment-{k}",
                "kind": "fragmented",
                "audio": fragment(clean, 0.25, 0.35, 0.3, seed + k),
                "text": s,
            }
        )
    for k in range(n_per_kind):
        lang, foreign_text = foreign[k % len(foreign)]
        s = sentences[(k + 4) % len(sentences)]
        audio, text = code_switch([(s, "en-us"), (foreign_text, lang), (s, "en-us")], synthesize=synthesize)
        items.append(
            {"id": f"switch-{k}-{lang}", "kind": "code_switch", "audio": audio[: 30 * SAMPLE_RATE], "text": text}
        )
    return items


__all__ = [
    "Loop",
    "add_white_noise",
    "code_switch",
    "excess_repeats",
    "find_loops",
    "find_repetition_loop",
    "fragment",
    "has_loop",
    "is_repetition_failure",
    "is_runaway",
    "loop_resolved",
    "repeated_count",
    "repeated_word",
    "repetition_prone_inputs",
    "words",
]
