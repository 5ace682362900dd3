"""Result objects of generation and transcription (openai-whisper's field names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int


@dataclass
class GenerationOutput:
    """What ``model.generate`` returns for a batch. ``tokens`` excludes the prompt; rows that
    finished early are padded with ``eos`` and log-prob 0. With beam search each row is the
    best finished hypothesis of its item and ``logprobs`` are its tokens' scores as the beam
    search ranked them (Hugging Face's: log-softmax before suppression)."""

    sequences: Int[torch.Tensor, "batch pos"]
    tokens: Int[torch.Tensor, "batch new"]
    logprobs: Float[torch.Tensor, "batch new"]
    finished: torch.Tensor  # [batch] bool: reached end of text before the length limit
    no_speech_probs: Float[torch.Tensor, " batch"] | None = None  # p(<|nospeech|>) at <|startoftranscript|>
    prefix_cache: Any = None  # a PrefixCache, from decoding.generate_recording_prefix
    sum_logprobs: Float[torch.Tensor, " batch"] | None = None  # openai beam search: the float32 score it ranked


@dataclass
class WordTiming:
    """One word: ``start``/``end`` in seconds of the whole recording, ``probability`` the mean
    probability of its tokens, ``tokens`` their ids."""

    word: str
    start: float
    end: float
    probability: float
    tokens: list[int] = field(default_factory=list)


@dataclass
class Segment:
    """A stretch of transcript between two timestamps (or one whole window without them).

    ``seek`` is the window's first mel frame; ``avg_logprob`` is openai-whisper's
    ``sum log p / (n_tokens + 1)`` (end of text included); ``temperature`` is the one that was
    kept after fallback."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: list[WordTiming] | None = None


@dataclass
class TranscriptionResult:
    """One transcript. ``tokens`` are the generated ids without the prompt or end of text
    (long-form: every kept window's tokens in order, timestamps included); ``token_logprobs[i]``
    is ``log p(tokens[i])`` under the (suppressed) decoding distribution; ``prompt`` is the
    (first window's) prompt, so ``prompt + tokens + [eos]`` teacher-forces a short-form
    transcript exactly."""

    text: str | None
    tokens: list[int]
    token_logprobs: list[float]
    prompt: list[int]
    finished: bool
    language: str | None = None
    segments: list[Segment] = field(default_factory=list)
    words: list[WordTiming] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def avg_logprob(self) -> float:
        return sum(self.token_logprobs) / max(len(self.token_logprobs), 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (openai-whisper's layout plus our fields)."""
        return asdict(self)


__all__ = ["GenerationOutput", "Segment", "TranscriptionResult", "WordTiming"]
