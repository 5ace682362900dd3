"""The transcription options, checked once (openai-whisper's names and defaults, except
``temperature=0.0`` and ``without_timestamps=None``: see docs/decoding.md)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    # word timings: which cross-attention heads, and what unit is teacher-forced (decoding/alignment.py);
    # "detected" beat the checkpoint's heads on every voice of benchmarks/bench_word_timing.py
    alignment_heads: str | Sequence[tuple[int, int]] = "detected"
    word_unit: str = "token"

    def __post_init__(self) -> None:
        """Check every option once, before any decoding: a bad value raises ``ValueError`` naming
        the option and the value. Numbers come back as plain ``int`` / ``float``.

        ``best_of`` is openai-whisper's: it sets the number of samples at temperatures above 0 and
        is not used at temperature 0 (greedy or ``beam_size``); given with only temperature 0 it
        is accepted, with a warning that it has no effect."""
        self.temperature = _temperatures(self.temperature)
        self.beam_size = _count("beam_size", self.beam_size)
        self.best_of = _count("best_of", self.best_of)
        self.max_new_tokens = _count(
            "max_new_tokens",
            self.max_new_tokens,
            what="a positive integer number of tokens (or None for the model's limit)",
        )
        self.length_penalty = _finite("length_penalty", self.length_penalty)
        self.patience = _finite("patience", self.patience)
        for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
            setattr(self, name, _real(name, getattr(self, name), allow_inf=True))
        if self.patience is not None and (self.patience <= 0 or not self.beam_size):
            raise ValueError(f"patience={self.patience} needs beam_size and must be > 0")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise ValueError(
                f"length_penalty={self.length_penalty}: openai-whisper's GNMT alpha must be in [0, 1] "
                "(None ranks by sum log p / length)"
            )
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise ValueError("hallucination_silence_threshold needs word_timestamps=True (it reads the word timings)")
        if self.best_of is not None and not any(t > 0 for t in self.temperature):
            warnings.warn(
                f"best_of={self.best_of} is used only at temperature > 0 (openai-whisper's rule); with "
                f"temperature={self.temperature} it has no effect. Use beam_size for several hypotheses at "
                "temperature 0, or a temperature above 0 to sample best_of",
                UserWarning,
                stacklevel=3,
            )
        self.initial_prompt = _prompt(self.initial_prompt)
        _suppress_ids(self.suppress_tokens)
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        from hooked_asr.models.decoding.timing import check_word_options

        check_word_options(self.alignment_heads, self.word_unit)

    @property
    def needs_window_loop(self) -> bool:
        """Options only openai-whisper's window loop applies (a clip of <= 30 s then takes that loop too)."""
        clip = self.clip_timestamps
        default_clip = clip in ("0", "", None) or (
            not isinstance(clip, str) and [float(x) for x in clip] in ([], [0.0])
        )
        return not default_clip or self.hallucination_silence_threshold is not None

    def suppress_list(self, checkpoint_list: Sequence[int]) -> list[int]:
        """openai-whisper's ``suppress_tokens``: ids (a list or ``"1,2,3"``); ``-1`` stands for
        the checkpoint's non-speech list; ``""``/``None`` for none."""
        ids = _suppress_ids(self.suppress_tokens)
        if -1 in ids:
            ids = [i for i in ids if i >= 0] + [int(i) for i in checkpoint_list]
        return sorted(set(ids))


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _real(name: str, x: Any, allow_inf: bool = False) -> float | None:
    """``None`` or a real number as ``float``; NaN (and inf unless ``allow_inf``) refused."""
    if x is None:
        return None
    if not _is_real(x) or math.isnan(float(x)) or (not allow_inf and math.isinf(float(x))):
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name}={x!r}: must be {kind} (or None)")
    return float(x)


def _finite(name: str, x: Any) -> float | None:
    return _real(name, x)


def _count(name: str, x: Any, what: str = "an integer >= 1 (or None)") -> int | None:
    """``None`` or a positive integer as ``int`` (a float such as 2.5, a bool or a string is refused)."""
    if x is None:
        return None
    if not isinstance(x, (int, np.integer)) or isinstance(x, (bool, np.bool_)) or x < 1:
        raise ValueError(f"{name}={x!r}: must be {what}")
    return int(x)


def _temperatures(t: Any) -> tuple[float, ...]:
    """openai-whisper's ``temperature``: one number, or a sequence for fallback; each finite and >= 0."""
    items = [t] if _is_real(t) or isinstance(t, (str, bytes, bool, np.bool_)) else t
    try:
        items = list(np.asarray(items).reshape(-1).tolist()) if isinstance(items, np.ndarray) else list(items)
    except TypeError:
        items = [t]
    if not items or not all(_is_real(x) and math.isfinite(float(x)) and float(x) >= 0 for x in items):
        raise ValueError(
            f"temperature={t!r}: must be a number >= 0, or a tuple of them for fallback "
            "(e.g. 0.0 or (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)); NaN, inf and strings are refused"
        )
    return tuple(float(x) for x in items)


def _prompt(p: Any) -> str | tuple[int, ...] | None:
    """``initial_prompt``: text, or token ids (non-negative integers)."""
    if p is None or isinstance(p, str):
        return p
    if isinstance(p, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"initial_prompt={bytes(p)[:40]!r}: bytes are not a prompt; decode them to text first "
            "(initial_prompt=data.decode('utf-8')) or pass a list of token ids"
        )
    try:
        ids = list(p)
    except TypeError:
        raise ValueError(f"initial_prompt={p!r}: must be text or a sequence of token ids") from None
    bad = [i for i in ids if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)) or i < 0]
    if bad:
        raise ValueError(
            f"initial_prompt holds {bad[:5]!r}, which are not token ids (non-negative integers); "
            "pass text, or a list of ids"
        )
    return tuple(int(i) for i in ids)


def _suppress_ids(s: Any) -> list[int]:
    """openai-whisper's ``suppress_tokens``: ``"-1"``, ``"1,2,3"``, a sequence of ids, ``""`` or ``None``."""
    if s is None or (isinstance(s, str) and not s.strip()):
        return []
    parts = s.split(",") if isinstance(s, str) else s
    try:
        parts = list(parts)
    except TypeError:
        parts = [s]
    ids = []
    for x in parts:
        x = x.strip() if isinstance(x, str) else x
        if isinstance(x, str) and x.lstrip("-").isdigit():
            x = int(x)
        if not isinstance(x, (int, np.integer)) or isinstance(x, (bool, np.bool_)) or x < -1:
            raise ValueError(
                f"suppress_tokens={s!r}: must be token ids (a list, or text such as '-1' or '1,2,3'; "
                "-1 stands for the checkpoint's non-speech tokens); {x!r} is not one"
            )
        ids.append(int(x))
    return ids


def check_generate_args(
    num_beams: Any, max_new_tokens: Any, do_sample: bool, temperature: Any, length_penalty: Any, patience: Any
) -> None:
    """Refuse bad :meth:`~hooked_asr.models.base.HookedEncoderDecoder.generate` arguments, naming
    the argument and its value (Hugging Face's names)."""
    if num_beams is None:
        raise ValueError("num_beams=None: must be an integer >= 1 (1: greedy or sampling)")
    _count("num_beams", num_beams, what="an integer >= 1 (1: greedy or sampling)")
    _count("max_new_tokens", max_new_tokens, what="a positive integer number of tokens (or None)")
    if do_sample and (not _is_real(temperature) or not math.isfinite(float(temperature)) or temperature <= 0):
        raise ValueError(
            f"temperature={temperature!r}: sampling needs a finite temperature > 0 "
            "(for greedy decoding pass do_sample=False)"
        )
    _finite("length_penalty", length_penalty)
    p = _finite("patience", patience)
    if p is not None and p <= 0:
        raise ValueError(f"patience={patience}: must be > 0")


__all__ = ["TranscribeOptions", "check_generate_args"]
