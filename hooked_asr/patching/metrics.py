"""Metrics that compare an intervened run with the clean one.

Transcript metrics work on generated outputs (text, or token ids when the model has no
tokenizer); logit metrics work on teacher-forced logits and are differentiable, so
attribution patching can use them.

    changed        1 if the normalised transcript differs from the clean one
    wer            word error rate of the patched transcript against ``item.text`` (or the clean transcript)
    wer_delta      WER(ref, patched) - WER(ref, clean)
    word_restored  1 if the acoustic word is present and the contextual word absent (Section 4.3)
    loop           1 if the transcript loops beyond what was said (see hooked_asr.repetition)
    loop_resolved  1 if the clean run looped and the patched run does not
    repeated       repeated items added by the model
    logit_diff     logits[pos, a] - logits[pos, b]
    logprob        mean log p(continuation) under teacher forcing
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from hooked_asr import repetition
from hooked_asr.text import normalize_text, word_error_rate


def transcript_changed(clean: str | None, patched: str | None) -> bool:
    return normalize_text(clean) != normalize_text(patched)


def contains_word(text: str | None, word: str) -> bool:
    """Whole-word, case- and punctuation-insensitive match (multi-word phrases allowed)."""
    w = normalize_text(word)
    return bool(w) and f" {w} " in f" {normalize_text(text)} "


def word_restored(text: str | None, acoustic_word: str, contextual_word: str | None = None) -> bool:
    """The transcript has the word that was spoken and not the one the context suggests."""
    ok = contains_word(text, acoustic_word)
    return ok and not (contextual_word and contains_word(text, contextual_word))


def logit_difference(
    logits: Float[torch.Tensor, "batch pos d_vocab"], position: int, token_a: int, token_b: int
) -> Float[torch.Tensor, "batch"]:
    """``logits[:, position, a] - logits[:, position, b]``."""
    return logits[:, position, token_a] - logits[:, position, token_b]


def continuation_logprob(
    logits: Float[torch.Tensor, "batch pos d_vocab"], tokens: torch.Tensor, prompt_len: int
) -> Float[torch.Tensor, "batch"]:
    """Mean ``log p(tokens[t] | tokens[<t])`` over the continuation ``t >= prompt_len``."""
    if tokens.shape[1] <= prompt_len:
        raise ValueError(f"no continuation to score: {tokens.shape[1]} tokens, prompt of {prompt_len}")
    x = logits[:, prompt_len - 1 : -1].float()
    tgt = tokens[:, prompt_len:].to(x.device).expand(x.shape[0], -1)
    # log_softmax(x)[t] = x[t] - logsumexp(x), without writing out every token's log-probability
    return (x.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(x, dim=-1)).mean(-1)


# ---- transcript metrics for sweeps -------------------------------------------------------
@dataclass
class Transcript:
    """One generated output: token ids (no prompt, no end of text), decoded text or None."""

    tokens: list[int]
    text: str | None
    finished: bool = True

    @property
    def words(self) -> list[str]:
        return normalize_text(self.text).split() if self.text is not None else [str(t) for t in self.tokens]

    @property
    def as_text(self) -> str:
        return self.text if self.text is not None else " ".join(str(t) for t in self.tokens)


@dataclass
class MetricContext:
    """What a transcript metric reads: the item, the clean and the patched transcript."""

    item: Any
    clean: Transcript
    patched: Transcript
    cache: dict[str, Any] = field(default_factory=dict)  # per-item values computed once (e.g. clean loop)


TranscriptMetric = Callable[[MetricContext], float]


def _ref_text(ctx: MetricContext) -> str:
    text = getattr(ctx.item, "text", None)
    return text if text is not None else ctx.clean.as_text


def _failure(t: Transcript, spoken: str | None) -> bool:
    return repetition.is_repetition_failure(
        t.words, repetition.words(spoken) if spoken else None, tokens=t.tokens, finished=t.finished
    )


def _extra(ctx: MetricContext, key: str) -> Any:
    extra = getattr(ctx.item, "extra", {}) or {}
    if key not in extra:
        raise KeyError(f"metric needs item.extra[{key!r}] (item {getattr(ctx.item, 'id', '?')})")
    return extra[key]


TRANSCRIPT_METRICS: dict[str, TranscriptMetric] = {
    "changed": lambda c: float(transcript_changed(c.clean.as_text, c.patched.as_text)),
    "wer": lambda c: word_error_rate(_ref_text(c), c.patched.as_text),
    "wer_delta": lambda c: (
        word_error_rate(_ref_text(c), c.patched.as_text) - word_error_rate(_ref_text(c), c.clean.as_text)
    ),
    "word_restored": lambda c: float(
        word_restored(c.patched.as_text, _extra(c, "acoustic_word"), _extra(c, "contextual_word"))
    ),
    "loop": lambda c: float(_failure(c.patched, getattr(c.item, "text", None))),
    "loop_resolved": lambda c: float(
        repetition.loop_resolved(
            _failure(c.clean, getattr(c.item, "text", None)), _failure(c.patched, getattr(c.item, "text", None))
        )
    ),
    "repeated": lambda c: float(
        repetition.excess_repeats(c.patched.words, repetition.words(getattr(c.item, "text", None)) or None)
    ),
    "n_tokens": lambda c: float(len(c.patched.tokens)),
}


def resolve_transcript_metrics(
    metrics: Sequence[str | TranscriptMetric] | Mapping[str, TranscriptMetric],
) -> dict[str, TranscriptMetric]:
    """Names (from :data:`TRANSCRIPT_METRICS`) or ``{name: fn(ctx) -> float}``."""
    if isinstance(metrics, Mapping):
        return dict(metrics)
    out: dict[str, TranscriptMetric] = {}
    for m in metrics:
        if callable(m):
            out[getattr(m, "__name__", f"metric{len(out)}")] = m
        elif m in TRANSCRIPT_METRICS:
            out[m] = TRANSCRIPT_METRICS[m]
        else:
            raise KeyError(f"unknown metric {m!r}; built-in transcript metrics: {sorted(TRANSCRIPT_METRICS)}")
    return out


__all__ = [
    "MetricContext",
    "TRANSCRIPT_METRICS",
    "Transcript",
    "contains_word",
    "continuation_logprob",
    "logit_difference",
    "resolve_transcript_metrics",
    "transcript_changed",
    "word_restored",
]
