"""Temperature fallback: decode at ``temperature[0]``; redo the rows whose result looks bad at
the next temperature (openai-whisper's ``decode_with_fallback``).

A result needs a retry when ``compression_ratio > compression_ratio_threshold`` (too
repetitive: ``len(text) / len(zlib(text))`` in UTF-8 bytes) or ``avg_logprob < logprob_threshold``
— unless it looks like silence (``no_speech_prob > no_speech_threshold`` *and*
``avg_logprob < logprob_threshold``), which no temperature would fix.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hooked_asr.models.decoding.state import DecodingState


def compression_ratio(text: str) -> float:
    """``len(b) / len(zlib.compress(b))`` of the UTF-8 bytes ``b`` (openai-whisper's)."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


@dataclass
class WindowResult:
    """One row's decoding of one window (openai-whisper's ``DecodingResult``)."""

    tokens: list[int]  # without end of text
    logprobs: list[float]
    sum_logprob: float  # includes the end of text's
    text: str
    finished: bool
    temperature: float
    no_speech_prob: float = float("nan")
    retry: int = 0

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text)


def needs_fallback(
    r: WindowResult,
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
) -> bool:
    bad = False
    if compression_ratio_threshold is not None and r.compression_ratio > compression_ratio_threshold:
        bad = True
    if logprob_threshold is not None and r.avg_logprob < logprob_threshold:
        bad = True
    if (
        no_speech_threshold is not None
        and r.no_speech_prob > no_speech_threshold
        and logprob_threshold is not None
        and r.avg_logprob < logprob_threshold
    ):
        bad = False  # silence
    return bad


def decode_with_fallback(
    decode: Callable[[list[int], float], list[WindowResult]],
    n_rows: int,
    temperatures: Sequence[float],
    *,
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
    state: DecodingState | None = None,
) -> list[WindowResult]:
    """``decode(rows, temperature)`` for all rows at ``temperatures[0]``, then again for the rows
    that need it at each next temperature. The last temperature's result is kept regardless."""
    out: list[WindowResult | None] = [None] * n_rows
    todo = list(range(n_rows))
    for retry, t in enumerate(temperatures):
        if state is not None:
            state.temperature, state.retry = t, retry
        got = decode(todo, t)
        last = retry == len(temperatures) - 1
        again = []
        for row, r in zip(todo, got):
            r.retry = retry
            out[row] = r
            if not last and needs_fallback(r, compression_ratio_threshold, logprob_threshold, no_speech_threshold):
                again.append(row)
        todo = again
        if not todo:
            break
    return out  # type: ignore[return-value]


__all__ = ["WindowResult", "compression_ratio", "decode_with_fallback", "needs_fallback"]
