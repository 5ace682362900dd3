"""The transcription options, checked once (openai-whisper's names and defaults, except
``temperature=0.0`` and ``without_timestamps=None``: see docs/decoding.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hooked_asr.models.decoding.timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS


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
    carry_initial_prompt: bool = False
    prompt_reset_on_temperature: float = 0.5
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    clip_timestamps: str | Sequence[float] = "0"
    hallucination_silence_threshold: float | None = None
    without_timestamps: bool | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    max_new_tokens: int | None = None
    use_cache: bool = True
    progress: bool | None = None
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. Qwen2-Audio's instruction, chat

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
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise ValueError(f"length_penalty={self.length_penalty}: openai-whisper's GNMT alpha must be in [0, 1] "
                             "(None ranks by sum log p / length)")
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise ValueError("hallucination_silence_threshold needs word_timestamps=True (it reads the word timings)")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")

    @property
    def needs_window_loop(self) -> bool:
        """Options only openai-whisper's window loop applies (a clip of <= 30 s then takes that loop too)."""
        clip = self.clip_timestamps
        default_clip = clip in ("0", "", None) or (not isinstance(clip, str) and [float(x) for x in clip] in ([], [0.0]))
        return not default_clip or self.hallucination_silence_threshold is not None

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
