"""Contrastive audio pairs: the audio counterpart of minimal pairs (IOI's swapped names), built offline.

Each pair is a clean clip and a corrupt clip of *the same length*, time-aligned word by word: both are
spoken word by word with espeak-ng (:mod:`hooked_asr.datasets.espeak`), every word trimmed of its
silence and placed at the same sample offsets, so the two clips differ only where the corruption is:

    word_swap(words, i, "eating")        word i spoken as another word, fitted to word i's duration
                                         (espeak's rate chosen for that duration, then padded / stretched)
    word_replaced(words, i, "noise")     word i's samples replaced by RMS-matched noise, silence or a word
    other_voice(words, "en-gb+f3")       the same words in another voice, each fitted to the clean word's slot
    noise_burst(words, i, snr_db=0)      a noise burst added over word i's samples

Both runs read the clean run's decoder inputs (its prompt and tokens: the clean text, teacher-forced),
and the natural metric is the logit difference at the position that predicts word ``i``'s first token::

    m(logits) = logits[pos, clean_token] - logits[pos, corrupt_token]

``corrupt_token``: the corrupt word's first token for a swap (or a replacement by a word); otherwise the
corrupt run's own most likely token there other than the clean one (what the model hears instead). A
pair without a target word (another voice) uses the mean log-probability of the clean text.

    >>> pair = word_swap(["he", "was", "reading", "a", "book"], 2, "eating")
    >>> x = pair.inputs(model)                         # clean + corrupt kwargs, position, tokens
    >>> x.metric(model(**x.clean)), x.metric(model(**x.corrupt))
    >>> eap_ig(model, x.clean, x.corrupt, x.metric)    # any method that takes a reference
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_asr.audio import SAMPLE_RATE
from hooked_asr.datasets.nonspeech import rms, white_noise_like

LEAD_S, GAP_S, TAIL_S = 0.2, 0.12, 0.3
_TRIM = 0.01  # a word's samples run from the first to the last above 1 % of its peak


@dataclass
class WordClip:
    """Speech spoken word by word: ``audio`` and each word's ``(word, start_sample, end_sample)``."""

    audio: Float[np.ndarray, "samples"]
    spans: list[tuple[str, int, int]]


def _trim(a: np.ndarray) -> np.ndarray:
    loud = np.nonzero(np.abs(a) > _TRIM * (np.abs(a).max() + 1e-9))[0]
    return a[loud[0] : loud[-1] + 1] if len(loud) else a


def _word(word: str, voice: str, rate: int) -> np.ndarray:
    from hooked_asr.datasets.espeak import synthesize

    return _trim(synthesize(word, voice=voice, rate=rate)).astype(np.float32)


def fit_duration(word: str, n: int, voice: str = "en-us", rate: int = 160) -> Float[np.ndarray, "n"]:
    """``word`` spoken in exactly ``n`` samples: espeak's rate is scaled by the duration ratio (speech
    rate, not pitch, changes), then the rest is zero-padded around the word (shorter) or removed by
    resampling (longer, a few percent at most after the rate step)."""
    a = _word(word, voice, rate)
    if len(a) != n and len(a) > 0:
        r = int(np.clip(round(rate * len(a) / n), 80, 450))
        if r != rate:
            a = _word(word, voice, r)
    if len(a) > n:
        from scipy.signal import resample

        a = resample(a, n).astype(np.float32)
    out = np.zeros(n, np.float32)
    off = (n - len(a)) // 2
    out[off : off + len(a)] = a
    return out


def speak_words(
    words: Sequence[str], voice: str = "en-us", rate: int = 160, slots: Sequence[int] | None = None
) -> WordClip:
    """``words`` spoken one by one, trimmed, ``GAP_S`` apart after ``LEAD_S`` of silence; ``slots``: each
    word's length in samples (fitted with :func:`fit_duration`), so two clips can share their timing."""
    parts = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)]
    spans, t = [], len(parts[0])
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    for i, w in enumerate(words):
        a = _word(w, voice, rate) if slots is None else fit_duration(w, slots[i], voice, rate)
        spans.append((w, t, t + len(a)))
        parts += [a, gap]
        t += len(a) + len(gap)
    parts.append(np.zeros(int(TAIL_S * SAMPLE_RATE) - len(gap), np.float32))
    return WordClip(np.concatenate(parts), spans)


@dataclass
class PairInputs:
    """One pair ready for a model: the clean run's forward kwargs, the corrupt run's (the same decoder
    tokens: :func:`~hooked_asr.patching.reference_inputs`), and the metric at ``position``."""

    clean: dict[str, Any]
    corrupt: dict[str, Any]
    tokens: torch.Tensor
    prompt_len: int
    position: int | None
    clean_token: int | None
    corrupt_token: int | None

    def metric(self, logits: Float[torch.Tensor, "batch pos d_vocab"]) -> Float[torch.Tensor, "batch"]:
        """``logits[:, pos, clean] - logits[:, pos, corrupt]`` (or, without a target word, the mean
        log-probability of the clean text)."""
        if self.position is None:
            from hooked_asr.patching.metrics import continuation_logprob

            return continuation_logprob(logits, self.tokens, self.prompt_len)
        return logits[:, self.position, self.clean_token] - logits[:, self.position, self.corrupt_token]

    @torch.no_grad()
    def values(self, model: Any) -> tuple[float, float]:
        """``(m(clean), m(corrupt))``: the metric of the clean and the corrupt run."""
        return float(self.metric(model(**self.clean))[0]), float(self.metric(model(**self.corrupt))[0])


@dataclass
class ContrastivePair:
    """A clean and a corrupt clip of one length, aligned word by word (see the module docstring).

    ``words``: the clean words; ``text``: what the clean clip says, as the model should write it (the
    teacher-forced continuation); ``index``: the word the corruption targets (None: all of them);
    ``corrupt_word``: the word spoken instead (swaps, replacement by a word)."""

    name: str
    kind: str
    clean: Float[np.ndarray, "samples"]
    corrupt: Float[np.ndarray, "samples"]
    words: list[str]
    text: str
    spans: list[tuple[str, int, int]]
    index: int | None = None
    corrupt_word: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupt.shape:
            raise ValueError(f"a pair needs clips of one length, got {self.clean.shape} and {self.corrupt.shape}")

    @property
    def span_s(self) -> tuple[float, float] | None:
        """The targeted word's ``(start, end)`` in seconds."""
        if self.index is None:
            return None
        _, a, b = self.spans[self.index]
        return a / SAMPLE_RATE, b / SAMPLE_RATE

    def _word_tokens(self, tok: Any) -> tuple[list[int], int]:
        """The clean text's tokens and the index of the targeted word's first token in them."""
        text_words = self.text.split(" ")
        ids = list(tok.encode(" " + self.text))
        if self.index is None:
            return ids, -1
        prefix = list(tok.encode(" " + " ".join(text_words[: self.index])))
        if ids[: len(prefix)] != prefix:
            raise ValueError(f"the tokens of {self.text!r} do not split before word {self.index}: pick another text")
        return ids, len(prefix)

    def inputs(
        self, model: Any, language: str | None = "en", task: str = "transcribe", corrupt_token: int | None = None
    ) -> PairInputs:
        """Both runs' inputs on ``model``, teacher-forced on the clean text with the clean prompt
        (``language`` / ``task``; None detects it on the *clean* clip). ``corrupt_token`` overrides the
        token the metric compares against (default: see the module docstring)."""
        from hooked_asr.patching.references import reference_inputs

        tok = model.tokenizer
        ids, first = self._word_tokens(tok)
        tf = model.teacher_forced_inputs(self.clean, ids, language=language, task=task)
        corrupt = reference_inputs(model, tf.kwargs, self.corrupt)
        if self.index is None:
            return PairInputs(dict(tf.kwargs), corrupt, tf.tokens, tf.prompt_len, None, None, None)
        pos = tf.prompt_len + first - 1  # the logits that predict the word's first token
        clean_tok = ids[first]
        if corrupt_token is None and self.corrupt_word is not None:
            w = self.corrupt_word.capitalize() if self.text.split(" ")[self.index][:1].isupper() else self.corrupt_word
            corrupt_token = int(tok.encode(" " + w)[0])
        if corrupt_token is None:
            with torch.no_grad():
                logits = model(**corrupt)[0, pos].clone()
            logits[clean_tok] = float("-inf")
            corrupt_token = int(logits.argmax())
        if corrupt_token == clean_tok:
            raise ValueError(
                f"the clean and corrupt word of {self.name!r} start with the same token {clean_tok}: "
                "the logit difference would be 0; pick words whose first tokens differ"
            )
        return PairInputs(dict(tf.kwargs), corrupt, tf.tokens, tf.prompt_len, pos, clean_tok, corrupt_token)


def _text(words: Sequence[str], text: str | None) -> str:
    if text is None:
        text = " ".join(words)
        text = text[:1].upper() + text[1:] + "."
    if len(text.split(" ")) != len(words):
        raise ValueError(f"text {text!r} must have one space-separated word per spoken word {list(words)}")
    return text


def word_swap(
    words: Sequence[str], index: int, replacement: str, voice: str = "en-us", rate: int = 160, text: str | None = None
) -> ContrastivePair:
    """Word ``index`` spoken as ``replacement`` in the same slot (same start and duration); every other
    word's samples are identical in both clips."""
    words = list(words)
    _check_index(words, index)
    clean = speak_words(words, voice, rate)
    slots = [b - a for _, a, b in clean.spans]
    corrupt = clean.audio.copy()
    _, a, b = clean.spans[index]
    corrupt[a:b] = fit_duration(replacement, slots[index], voice, rate)
    return ContrastivePair(
        f"swap:{words[index]}->{replacement}",
        "word_swap",
        clean.audio,
        corrupt,
        words,
        _text(words, text),
        clean.spans,
        index,
        replacement,
    )


def word_replaced(
    words: Sequence[str],
    index: int,
    fill: str = "noise",
    voice: str = "en-us",
    rate: int = 160,
    text: str | None = None,
    seed: int = 0,
) -> ContrastivePair:
    """Word ``index``'s samples replaced by ``fill``: ``'noise'`` (white, the word's RMS), ``'silence'``,
    or another word (fitted to the slot, as :func:`word_swap`)."""
    words = list(words)
    _check_index(words, index)
    clean = speak_words(words, voice, rate)
    _, a, b = clean.spans[index]
    corrupt = clean.audio.copy()
    if fill == "noise":
        corrupt[a:b] = white_noise_like(clean.audio[a:b], seed=seed)
    elif fill == "silence":
        corrupt[a:b] = 0.0
    else:
        corrupt[a:b] = fit_duration(fill, b - a, voice, rate)
    word = None if fill in ("noise", "silence") else fill
    return ContrastivePair(
        f"replace:{words[index]}->{fill}",
        "word_replaced",
        clean.audio,
        corrupt,
        words,
        _text(words, text),
        clean.spans,
        index,
        word,
        {"fill": fill},
    )


def other_voice(
    words: Sequence[str],
    voice_b: str = "en-gb+f3",
    voice: str = "en-us",
    rate: int = 160,
    text: str | None = None,
    index: int | None = None,
) -> ContrastivePair:
    """The same words in ``voice_b``, each fitted to the clean word's slot (same timing). ``index``: a
    word to measure at (the corrupt run's top other token there), None: the clean text's log-probability."""
    words = list(words)
    clean = speak_words(words, voice, rate)
    slots = [b - a for _, a, b in clean.spans]
    corrupt = speak_words(words, voice_b, rate, slots=slots)
    if corrupt.audio.shape != clean.audio.shape or [s[1:] for s in corrupt.spans] != [s[1:] for s in clean.spans]:
        raise AssertionError("fitted word slots must give the clean timing")  # fit_duration returns n samples
    if index is not None:
        _check_index(words, index)
    return ContrastivePair(
        f"voice:{voice}->{voice_b}",
        "other_voice",
        clean.audio,
        corrupt.audio,
        words,
        _text(words, text),
        clean.spans,
        index,
        None,
        {"voice_b": voice_b},
    )


def noise_burst(
    words: Sequence[str],
    index: int,
    snr_db: float = 0.0,
    voice: str = "en-us",
    rate: int = 160,
    text: str | None = None,
    seed: int = 0,
) -> ContrastivePair:
    """White noise added over word ``index``'s samples at ``snr_db`` against that word (0 dB: as loud as it)."""
    words = list(words)
    _check_index(words, index)
    clean = speak_words(words, voice, rate)
    _, a, b = clean.spans[index]
    seg = clean.audio[a:b]
    corrupt = clean.audio.copy()
    corrupt[a:b] = seg + white_noise_like(seg, seed=seed, rms_level=rms(seg) / 10 ** (snr_db / 20))
    return ContrastivePair(
        f"burst:{words[index]}@{snr_db:g}dB",
        "noise_burst",
        clean.audio,
        np.clip(corrupt, -1, 1),
        words,
        _text(words, text),
        clean.spans,
        index,
        None,
        {"snr_db": snr_db},
    )


def _check_index(words: Sequence[str], index: int) -> None:
    if not 0 <= index < len(words):
        raise IndexError(f"word index {index} is outside the {len(words)} words {list(words)}")


# Minimal pairs whose swapped words start with different tokens (Whisper's vocabulary) and that
# tiny.en and base transcribe word for word from espeak's speech, both clips (measured; the
# metric flips sign between the clean and the corrupt run on both models).
SWAPS: list[tuple[list[str], int, str]] = [
    (["he", "was", "reading", "a", "book"], 4, "letter"),
    (["she", "bought", "a", "red", "car"], 3, "blue"),
    (["we", "will", "meet", "on", "monday"], 4, "friday"),
]

PAIR_KINDS: dict[str, Callable[..., ContrastivePair]] = {
    "word_swap": lambda w, i, r, **kw: word_swap(w, i, r, **kw),
    "word_noise": lambda w, i, r, **kw: word_replaced(w, i, "noise", **kw),
    "word_silence": lambda w, i, r, **kw: word_replaced(w, i, "silence", **kw),
    "other_voice": lambda w, i, r, **kw: other_voice(w, index=i, **kw),
    "noise_burst": lambda w, i, r, **kw: noise_burst(w, i, **kw),
}


def contrastive_pairs(
    kinds: Sequence[str] = ("word_swap",), n: int | None = None, **kwargs: Any
) -> list[ContrastivePair]:
    """The built-in pairs (:data:`SWAPS`) of each kind in ``kinds`` (keys of :data:`PAIR_KINDS`); ``n``: the
    first ``n`` sentences. ``kwargs`` go to the builders (``voice``, ``rate``)."""
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown:
        raise ValueError(f"unknown pair kinds {unknown}; use {sorted(PAIR_KINDS)}")
    return [PAIR_KINDS[k](w, i, r, **kwargs) for k in kinds for (w, i, r) in SWAPS[:n]]


__all__ = [
    "PAIR_KINDS",
    "SWAPS",
    "ContrastivePair",
    "PairInputs",
    "WordClip",
    "contrastive_pairs",
    "fit_duration",
    "noise_burst",
    "other_voice",
    "speak_words",
    "word_replaced",
    "word_swap",
]
