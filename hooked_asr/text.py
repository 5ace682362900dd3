"""Text scoring and summary statistics shared by every method: normalisation, edit distance,
word error rate, phoneme error rate, confidence intervals.

WER is ``(S + D + I) / N`` over words after :func:`normalize_text` (lower case,
punctuation dropped, apostrophes kept), so it counts words, not commas or capitals.
PER is the same edit distance over phoneme symbols.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def normalize_text(text: str | None) -> str:
    """Lower case, punctuation removed (apostrophes kept), whitespace collapsed."""
    return " ".join(re.findall(r"[\w']+", (text or "").lower()))


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (unit insert / delete / substitute)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str | None, hypothesis: str | None) -> float:
    """``(S + D + I) / N`` on normalised words of one pair. An empty reference gives 0 for
    an empty hypothesis and 1 otherwise (jiwer leaves it undefined)."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def corpus_word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words (not a mean of per-clip WERs)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for r, h in zip(references, hypotheses):
        ref, hyp = normalize_text(r).split(), normalize_text(h).split()
        edits += edit_distance(ref, hyp)
        words += len(ref)
    if words == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / words


def phoneme_error_rate(reference: str, hypothesis: str) -> float:
    """``edit_distance(ref, hyp) / len(ref)`` over phoneme symbols (characters, whitespace and
    stress marks dropped); NaN when the reference has no phonemes."""
    ref, hyp = _phoneme_symbols(reference), _phoneme_symbols(hypothesis)
    return edit_distance(ref, hyp) / len(ref) if ref else math.nan


def _phoneme_symbols(ipa: str) -> list[str]:
    return [c for c in ipa if not c.isspace() and c not in "ˈˌ"]


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval ``mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)`` (NaNs dropped)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size == 1:
        return (m, m, m)
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (m, m - half, m + half)


def clip_text(s: str, n: int) -> str:
    """``s`` on one line, cut to ``n`` characters with an ellipsis (for tables)."""
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 1] + "…"


__all__ = [
    "clip_text",
    "corpus_word_error_rate",
    "edit_distance",
    "mean_ci",
    "normalize_text",
    "phoneme_error_rate",
    "word_error_rate",
]
