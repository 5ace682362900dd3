"""The transcription options, checked once (openai-whisper's names and defaults, except
``temperature=0.0`` and ``without_timestamps=None``: see docs/decoding.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TranscribeOptions:
    language: str | None = None
    task: str = "transcribe"
    temperature: tuple[float, ...] = (0.0,)
    beam_size: int | None = None
    best_of: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | Sequence[int] | None = None
    word_timestamps: bool = False
    without_timestamps: bool | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    max_new_tokens: int | None = None
    use_cache: bool = True
    progress: bool | None = None
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. Qwen2-Audio's instruction, chat
    # word timings: which cross-attention heads, and what unit is teacher-forced (decoding/alignment.py);
    # "detected" beat the checkpoint's heads on every voice of benchmarks/bench_word_timing.py
    alignment_heads: str | Sequence[tuple[int, int]] = "detected"
    word_unit: str = "token"

    def __post_init__(self) -> None:
        t = self.temperature
        self.temperature = (float(t),) if isinstance(t, (int, float)) else tuple(float(x) for x in t)
        if not self.temperature or any(x < 0 for x in self.temperature):
            raise ValueError(f"temperature must be >= 0 (a float or a tuple for fallback), got {t!r}")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens}: must be a positive number of tokens (or None for the model's limit)"
            )
        if self.beam_size is not None and self.beam_size < 1:
            raise ValueError(f"beam_size={self.beam_size}: must be >= 1 (or None for greedy)")
        if self.best_of is not None and self.best_of < 1:
            raise ValueError(f"best_of={self.best_of}: must be >= 1")
        if self.patience is not None and (self.patience <= 0 or not self.beam_size):
            raise ValueError(f"patience={self.patience} needs beam_size and must be > 0")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        from hooked_asr.models.decoding.timing import check_word_options

        check_word_options(self.alignment_heads, self.word_unit)

    def suppress_list(self, checkpoint_list: Sequence[int]) -> list[int]:
        """openai-whisper's ``suppress_tokens``: ids (a list or ``"1,2,3"``); ``-1`` stands for
        the checkpoint's non-speech list; ``""``/``None`` for none."""
        s = self.suppress_tokens
        if s is None or s == "":
            ids: list[int] = []
        elif isinstance(s, str):
            ids = [int(x) for x in s.split(",") if x.strip()]
        else:
            ids = [int(x) for x in s]
        if -1 in ids:
            ids = [i for i in ids if i >= 0] + [int(i) for i in checkpoint_list]
        return sorted(set(ids))
