"""Word timings from the decoder's cross-attention, as openai-whisper's ``timing.py``.

The matrix ``M`` (one row per teacher-forced unit, over the audio's encoder frames) and its
options come from :mod:`hooked_asr.models.decoding.alignment`; here DTW's path through it becomes
words. ``transcribe`` reads BPE tokens with the heads ranked on each window (``"detected"``);
``alignment_heads="openai"`` is openai-whisper's method (the checkpoint's alignment heads, every
head of the decoder's upper half when it names none), as :func:`find_alignment` by default.

Row ``i`` of ``M`` is the position whose output *predicts* text token ``i`` (the position of
the token before it): that is where the decoder looks at the audio of token ``i``. A token
starts at the first frame the path gives it; a word spans from its first token's start to the
next word's start (20 ms per encoder frame).
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_asr.audio import ENCODER_FRAME_SECONDS

from hooked_asr.models.decoding.alignment import (  # noqa: F401  (re-exported: timing's public names)
    alignment,
    alignment_heads,
    alignment_matrix,
    check_word_options,
    dtw,
    median_filter,
)
from hooked_asr.models.decoding.results import Segment, WordTiming

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def split_to_word_tokens(
    tokenizer: Any, tokens: list[int], language: str | None = None
) -> tuple[list[str], list[list[int]]]:
    """openai-whisper's word split: byte-complete pieces, joined into words at spaces (special
    tokens and punctuation stand alone); languages written without spaces split per piece."""
    if tokenizer is None:  # no text to join pieces by: each token is a word
        return [f" <{t}>" for t in tokens], [[t] for t in tokens]
    eot = tokenizer.eot
    decode = tokenizer.decode_with_timestamps
    full = decode(tokens)
    subwords, subword_tokens, current, offset = [], [], [], 0
    for t in tokens:
        current.append(t)
        piece = decode(current)
        if "\ufffd" not in piece or full[offset + piece.index("\ufffd")] == "\ufffd":
            subwords.append(piece)
            subword_tokens.append(current)
            current = []
            offset += len(piece)
    if language in {"zh", "ja", "th", "lo", "my", "yue"}:
        return subwords, subword_tokens
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for sw, swt in zip(subwords, subword_tokens):
        if swt[0] >= eot or sw.startswith(" ") or sw.strip() in string.punctuation or not words:
            words.append(sw)
            word_tokens.append(list(swt))
        else:
            words[-1] += sw
            word_tokens[-1].extend(swt)
    return words, word_tokens


def find_alignment(
    model: Any,
    text_tokens: Sequence[int],
    *,
    input_features: Float[torch.Tensor, "1 n_mels frames"] | None = None,
    encoder_hidden_states: Float[torch.Tensor, "1 frame d_model"] | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    medfilt_width: int | None = None,
    qk_scale: float = 1.0,
    word_start: str = "space",
    **options: Any,
) -> list[WordTiming]:
    """Words of ``text_tokens`` (no special tokens) with start/end seconds from the window start.

    ``num_frames``: mel frames (100 per second) that hold audio (default: all). The decoder is
    teacher-forced on the plain sot sequence of ``language``/``task`` (no previous text), as
    openai-whisper does. Each word's ``probability`` is the mean of its tokens' teacher-forced
    probabilities. ``options``: ``heads`` (``"openai"``, ``"detected"`` or ``[(layer, head), ...]``),
    ``unit`` (``"token"`` or ``"character"``), ``norm``, ``top_k``: see :func:`alignment`. With
    characters a word ends where the character after it (a space) starts, and starts where the
    space before it starts (``word_start="space"``; ``"char"``: where its first character
    starts). The space's row is where the decoder looks for the boundary: its first character's
    row is ~75 ms late on espeak speech, the space's within ~20 ms (bench_word_timing.py).

    >>> words = find_alignment(model, out.tokens, input_features=feats, num_frames=len(audio) // 160)
    """
    text_tokens = [int(t) for t in text_tokens]
    if not text_tokens:
        return []
    a = alignment(
        model,
        text_tokens,
        input_features=input_features,
        encoder_hidden_states=encoder_hidden_states,
        num_frames=num_frames,
        language=language,
        task=task,
        medfilt_width=medfilt_width,
        qk_scale=qk_scale,
        **options,
    )
    token_probs = a["token_probs"]
    words, word_tokens = split_to_word_tokens(model.tokenizer, text_tokens + [model.cfg.eos_token_id], language)
    if len(word_tokens) <= 1:
        return []
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    if a["char_start"] is None:
        rows, cols = dtw(-a["matrix"].double().cpu().numpy())
        jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
        jump_times = cols[jumps] * ENCODER_FRAME_SECONDS  # start of each token (+ end of text)
        starts, ends = jump_times[bounds[:-1]], jump_times[bounds[1:]]
    else:  # each token-level word's characters in the text: start of its first, start of the one after
        char_start = a["char_start"] * ENCODER_FRAME_SECONDS
        text, pos, starts, ends = a["text"], 0, [], []
        for w in words[:-1]:
            core = w.strip()
            at = text.find(core, pos) if core else -1
            if at < 0:  # a piece the character text does not hold verbatim: keep to the running position
                at = pos
            lo, pos = at, at + len(core)
            if word_start == "space" and lo > 0 and text[lo - 1].isspace():
                lo -= 1  # the boundary is where the space before the word starts
            starts.append(char_start[min(lo, len(text))])
            ends.append(char_start[min(pos, len(text))])
        starts, ends = np.array(starts), np.array(ends)
    return [
        WordTiming(word, float(s), float(e), float(np.mean(token_probs[i:j])), list(wt))
        for word, wt, s, e, i, j in zip(words, word_tokens, starts, ends, bounds[:-1], bounds[1:])
    ]


@contextlib.contextmanager
def keep_encoder_output(model: Any, on: bool = True) -> Iterator[list[torch.Tensor]]:
    """Within the block, every ``encoder.hook_out`` the model computes (after the user's own hooks
    on it, so exactly what the decoder read) is appended to the list yielded, for the alignment
    step to reuse instead of running the encoder again. ``on=False`` adds no hook."""
    seen: list[torch.Tensor] = []
    if not on:
        yield seen
        return

    def keep(x: torch.Tensor, hook: Any) -> None:
        seen.append(x.detach())

    with model.hooks(fwd_hooks=[("encoder.hook_out", keep)]):
        yield seen


def encoder_row(seen: list[torch.Tensor], row: int, n_rows: int) -> torch.Tensor | None:
    """Row ``row`` of the encoder output a decoding of ``n_rows`` rows read (from
    :func:`keep_encoder_output`), or None (then the alignment step encodes again).

    The first encoding is the first attempt's, which holds every row (sampling repeats each row
    ``best_of`` times, consecutively); temperature fallback re-decodes a subset of the rows from
    the same audio, so the encoder output is the same unless a hook on the encoder is random."""
    if not seen or seen[0].shape[0] % n_rows:
        return None
    k = seen[0].shape[0] // n_rows
    return seen[0][row * k : row * k + 1]


def merge_punctuations(
    alignment: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS, appended: str = APPEND_PUNCTUATIONS
) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous one."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        prev, nxt = alignment[i], alignment[j]
        if prev.word.startswith(" ") and prev.word.strip() in prepended:
            nxt.word, nxt.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        prev, nxt = alignment[i], alignment[j]
        if not prev.word.endswith(" ") and nxt.word in appended:
            prev.word, prev.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            nxt.word, nxt.tokens = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(
    model: Any,
    segments: list[Segment],
    *,
    time_offset: float,
    last_speech_timestamp: float,
    input_features: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    options: Any = None,
) -> float:
    """Fill ``segment.words`` for one window's segments (openai-whisper's ``add_word_timestamps``,
    with its clamps of over-long words at sentence and segment boundaries); returns the new
    ``last_speech_timestamp``. ``options`` (a :class:`TranscribeOptions`) gives
    ``alignment_heads``, ``word_unit`` and the punctuation merged into words (``prepend_punctuations``,
    ``append_punctuations``); pass the encoder output the decoding read as
    ``encoder_hidden_states`` so the encoder does not run again (see :func:`keep_encoder_output`)."""
    if not segments:
        return last_speech_timestamp
    eot = model.cfg.eos_token_id
    per_segment = [[t for t in s.tokens if t < eot] for s in segments]
    text_tokens = [t for ts in per_segment for t in ts]
    alignment = find_alignment(
        model,
        text_tokens,
        input_features=input_features,
        encoder_hidden_states=encoder_hidden_states,
        num_frames=num_frames,
        language=language,
        task=task,
        heads=getattr(options, "alignment_heads", "detected"),
        unit=getattr(options, "word_unit", "token"),
    )
    durations = np.array([w.end - w.start for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        marks = ".。!！?？"
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > longest:
                if alignment[i].word in marks:
                    alignment[i].end = alignment[i].start + longest
                elif alignment[i - 1].word in marks:
                    alignment[i].start = alignment[i].end - longest
    merge_punctuations(
        alignment,
        getattr(options, "prepend_punctuations", PREPEND_PUNCTUATIONS),
        getattr(options, "append_punctuations", APPEND_PUNCTUATIONS),
    )
    k = 0
    for seg, toks in zip(segments, per_segment):
        saved, words = 0, []
        while k < len(alignment) and saved < len(toks):
            a = alignment[k]
            if a.word:
                words.append(
                    WordTiming(
                        a.word, round(time_offset + a.start, 2), round(time_offset + a.end, 2), a.probability, a.tokens
                    )
                )
            saved += len(a.tokens)
            k += 1
        if words:
            if words[0].end - last_speech_timestamp > median * 4 and (
                words[0].end - words[0].start > longest
                or (len(words) > 1 and words[1].end - words[0].start > longest * 2)
            ):
                if len(words) > 1 and words[1].end - words[1].start > longest:
                    boundary = max(words[1].end / 2, words[1].end - longest)
                    words[0].end = words[1].start = boundary
                words[0].start = max(0, words[0].end - longest)
            if seg.start < words[0].end and seg.start - 0.5 > words[0].start:
                words[0].start = max(0, min(words[0].end - median, seg.start))
            else:
                seg.start = words[0].start
            if seg.end > words[-1].start and seg.end + 0.5 < words[-1].end:
                words[-1].end = max(words[-1].start + median, seg.end)
            else:
                seg.end = words[-1].end
            last_speech_timestamp = seg.end
        seg.words = words
    return last_speech_timestamp


__all__ = [
    "APPEND_PUNCTUATIONS",
    "PREPEND_PUNCTUATIONS",
    "add_word_timestamps",
    "encoder_row",
    "find_alignment",
    "keep_encoder_output",
    "merge_punctuations",
    "split_to_word_tokens",
]
