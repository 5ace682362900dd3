"""Text scoring shared by every method: normalisation, edit distance, word error rate.

WER is ``(S + D + I) / N`` over words after :func:`normalize_text` (lower case,
punctuation dropped, apostrophes kept), so it counts words, not commas or capitals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


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


__all__ = ["corpus_word_error_rate", "edit_distance", "normalize_text", "word_error_rate"]
