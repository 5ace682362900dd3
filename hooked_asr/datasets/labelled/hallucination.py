"""Inputs on which small Whisper models go wrong, and correct-vs-hallucinated sets made by
transcribing clips with a model and pairing zero-WER with high-WER items of matched length."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hooked_asr.audio import SAMPLE_RATE
from hooked_asr.datasets.labelled._build import check_kinds, check_n, finish, speak
from hooked_asr.datasets.labelled.dataset import LabelledDataset, digest, progress_bar
from hooked_asr.datasets.labelled.texts import REPEAT_WORDS, SENTENCES
from hooked_asr.datasets.labelled.voices import DEFAULT_VOICES, check_voices, random_voice
from hooked_asr.datasets.nonspeech import mix_at_snr, nonspeech_clip

HALLUCINATION_KINDS = ("clean", "noisy", "truncated", "silence_padded", "fast", "repeated")


def hallucination_prone_inputs(
    n_per_kind: int = 10,
    seed: int = 0,
    kinds: Sequence[str] = HALLUCINATION_KINDS,
    voices: Sequence[str] = DEFAULT_VOICES,
    snr_range: tuple[float, float] = (-12.0, -3.0),
    clean_voice: str = "en-us",
    progress: bool = True,
) -> LabelledDataset:
    """Inputs on which small Whisper models often go wrong, with exact references.

    Kinds (label ``k`` = ``kinds[k]``, ``text`` = what was said):

    - ``clean``: a sentence at a normal rate in ``clean_voice`` (the baseline that supplies
      most WER-0 items; the other kinds draw a random voice and variant from ``voices``).
    - ``noisy``: a sentence in white/pink/brown noise at an SNR drawn from ``snr_range``.
    - ``truncated``: only the first 2-4 words of a sentence, spoken alone (models tend to
      complete or invent the rest).
    - ``silence_padded``: a sentence followed by 12-25 s of silence (models invent words in silence).
    - ``fast``: a sentence at 380-450 words per minute.
    - ``repeated``: one word said 8-20 times (models lose count or loop).
    """
    n = check_n(n_per_kind)
    kinds = check_kinds("kind", kinds, HALLUCINATION_KINDS)
    voices = check_voices(voices)
    check_voices([clean_voice])
    lo, hi = snr_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"snr_range must be finite (lo, hi) dB with lo <= hi, got {snr_range}")
    rng = np.random.default_rng(seed)
    records, audio = [], []
    for j in progress_bar(range(n), progress, "hallucination_prone_inputs"):
        for label, kind in enumerate(kinds):
            sentence = SENTENCES[int(rng.integers(len(SENTENCES)))]
            voice = random_voice(rng, voices)
            rate = int(rng.integers(150, 181))
            if kind == "clean":
                voice = clean_voice
            snr, noise_kind = float("nan"), "none"
            extra_s = 0.0
            text = sentence
            if kind == "truncated":
                words = sentence.split()
                text = " ".join(words[: int(rng.integers(2, 5))]).rstrip(",.?!")
            elif kind == "fast":
                rate = int(rng.integers(380, 451))
            elif kind == "repeated":
                text = " ".join([REPEAT_WORDS[int(rng.integers(len(REPEAT_WORDS)))]] * int(rng.integers(8, 21)))
            a = speak(text, voice, rate, None)
            if kind == "noisy":
                snr = float(rng.uniform(lo, hi))
                noise_kind = ("white", "pink", "brown")[int(rng.integers(3))]
                a = mix_at_snr(a, nonspeech_clip(noise_kind, a.size / SAMPLE_RATE, int(rng.integers(2**31))), snr)
            elif kind == "silence_padded":
                extra_s = float(rng.uniform(12.0, 25.0))
                lead = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
                a = np.concatenate([lead, a, np.zeros(int(extra_s * SAMPLE_RATE), np.float32)])[: 30 * SAMPLE_RATE]
            records.append(
                {
                    "label": label,
                    "label_name": kind,
                    "kind": kind,
                    "text": text,
                    "voice": voice,
                    "rate": rate,
                    "noise": f"{noise_kind}@{snr:.1f}dB" if kind == "noisy" else "none",
                    "padding_s": round(extra_s, 3),
                    "group": j,
                }
            )
            audio.append(a)
    return finish(
        "hallucination_prone_inputs",
        {"n_per_kind": n, "seed": seed, "kinds": kinds, "snr_range": snr_range},
        records,
        audio,
        kinds,
    )


def _text_of(result: Any) -> str:
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    if text is None and isinstance(result, Mapping):
        text = result.get("text")
    if text is None:
        raise TypeError(f"transcribe returned {type(result).__name__}; expected an object with .text or a str")
    return str(text)


def transcribe_all(
    model: Any, clips: Sequence[np.ndarray], batch_size: int = 8, progress: bool = True, **transcribe_kwargs: Any
) -> list[str]:
    """``model.transcribe`` over ``clips`` in batches (a list in, a list out); the texts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts: list[str] = []
    for b in progress_bar(
        range(0, len(clips), batch_size), progress, "transcribing", total=-(-len(clips) // batch_size)
    ):
        batch = [np.asarray(c, dtype=np.float32) for c in clips[b : b + batch_size]]
        out = model.transcribe(batch, **transcribe_kwargs)
        if not isinstance(out, (list, tuple)):
            out = [out]
        if len(out) != len(batch):
            raise ValueError(f"model.transcribe returned {len(out)} results for a batch of {len(batch)}")
        texts += [_text_of(r) for r in out]
    return texts


def hallucination_dataset(
    model: Any,
    clips_or_dataset: Sequence[Any],
    references: Sequence[str] | None = None,
    n_per_class: int | None = None,
    min_wer: float = 0.5,
    max_length_diff: int | None = 2,
    batch_size: int = 8,
    max_new_tokens: int | None = 128,
    strict: bool = False,
    n_wrong: int | None = None,
    progress: bool = True,
    **transcribe_kwargs: Any,
) -> LabelledDataset:
    """Correct (label 0, WER == 0) vs hallucinated (label 1, highest WER) transcripts.

    ``clips_or_dataset``: 1-D arrays at 16 kHz, or dict items with ``audio`` (and ``text``,
    used as the reference when ``references`` is None; their other metadata is kept, a
    source ``label``/``label_name`` renamed ``source_label``/``source_label_name``).
    Every clip is transcribed with ``model.transcribe`` (greedy; ``max_new_tokens``
    and ``transcribe_kwargs`` passed on) and scored with
    :func:`hooked_asr.text.word_error_rate` against its reference.

    Matching on reference length: candidates for label 1 are the clips with
    ``WER >= min_wer``, taken in order of decreasing WER (ties: lower index first). Each
    takes the still-unused zero-WER clip whose reference has the closest number of words
    (ties: closest number of characters, then lower index), if that difference is at most
    ``max_length_diff`` words (None: any); a candidate with no such partner is skipped.
    This stops at ``n_per_class`` pairs (None: as many as possible). So the two groups
    have (nearly) the same reference-length distribution and a probe cannot win by
    reading length. Fewer pairs than asked: a warning (an error with ``strict``).

    ``n_wrong`` (default ``n_per_class``): label-1 items wanted, for unequal classes as in
    [BT] §4.2 (150 zero-WER, 200 highest-WER: ``n_per_class=150, n_wrong=200``). The
    extra ones are the next highest-WER clips, each matched in length to an already
    paired zero-WER clip (reused), so the length distributions stay matched.

    Items come pair by pair (label 0 then 1) with ``text`` (reference), ``transcript``,
    ``wer``, ``ref_words``, ``pair`` and ``source_index``, then the extra label-1 items
    (``pair`` = the pair of the zero-WER clip they were matched to).
    """
    if n_wrong is not None and (n_per_class is None or n_wrong < n_per_class):
        raise ValueError(f"n_wrong={n_wrong} needs n_per_class set and n_wrong >= n_per_class ({n_per_class})")
    if n_per_class is not None:
        check_n(n_per_class)
    if not 0 < min_wer:
        raise ValueError(f"min_wer must be > 0, got {min_wer}")
    clips, metas = _clips_and_metadata(clips_or_dataset)
    references = _references(metas, references)
    if not clips:
        raise ValueError("no clips given")
    from hooked_asr.text import normalize_text, word_error_rate

    kw = dict(transcribe_kwargs)
    if max_new_tokens is not None:
        kw["max_new_tokens"] = max_new_tokens
    hyps = transcribe_all(model, clips, batch_size, progress, **kw)
    wers = [word_error_rate(r, h) for r, h in zip(references, hyps)]
    lengths = [(len(normalize_text(r).split()), len(normalize_text(r))) for r in references]  # (words, chars)
    zero = [i for i, w in enumerate(wers) if w == 0.0]
    high = sorted((i for i, w in enumerate(wers) if w >= min_wer), key=lambda i: (-wers[i], i))
    pairs = _length_matched_pairs(zero, high, lengths, n_per_class, max_length_diff)
    summary = (
        f"{len(clips)} clips: {len(zero)} with WER 0, {len(high)} with WER >= {min_wer}; "
        f"{len(pairs)} length-matched pairs"
    )
    if not pairs:
        raise ValueError(
            f"no zero-WER / high-WER pairs could be formed ({summary}); give more or harder clips, "
            "lower min_wer or raise max_length_diff"
        )
    if n_per_class is not None and len(pairs) < n_per_class:
        _short(f"asked for {n_per_class} per class, got {len(pairs)} ({summary})", strict)
    extras: list[tuple[int, int]] = []
    if n_wrong is not None and n_wrong > len(pairs):
        extras = _extra_wrong(pairs, high, lengths, n_wrong, max_length_diff)
        if len(pairs) + len(extras) < n_wrong:
            _short(f"asked for {n_wrong} high-WER items, got {len(pairs) + len(extras)} ({summary})", strict)
    records, audio = [], []
    order = [(p, label, i) for p, (z, h) in enumerate(pairs) for label, i in ((0, z), (1, h))]
    for p, label, i in order + [(p, 1, h) for p, h in extras]:
        meta = {
            ("source_" + k if k in ("label", "label_name") else k): v
            for k, v in metas[i].items()
            if isinstance(v, (str, int, float, bool, np.integer, np.floating))
        }
        meta.update(
            {
                "label": label,
                "label_name": ("correct", "hallucination")[label],
                "text": references[i],
                "transcript": hyps[i],
                "wer": float(wers[i]),
                "ref_words": lengths[i][0],
                "pair": p,
                "source_index": i,
            }
        )
        records.append(meta)
        audio.append(np.asarray(clips[i], dtype=np.float32))
    src = getattr(clips_or_dataset, "dataset_id", None) or digest(references, [np.asarray(c) for c in clips])
    model_id = getattr(getattr(model, "cfg", None), "name", None) or type(model).__name__
    return finish(
        "hallucination_dataset",
        {
            "source": src,
            "model": model_id,
            "n_per_class": n_per_class,
            "n_wrong": n_wrong,
            "min_wer": min_wer,
            "max_length_diff": max_length_diff,
            **{k: v for k, v in sorted(kw.items())},
        },
        records,
        audio,
        ["correct", "hallucination"],
    )


def _clips_and_metadata(clips_or_dataset: Sequence[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The audio of every item and its metadata (empty for a bare array)."""
    if isinstance(clips_or_dataset, LabelledDataset):
        return [clips_or_dataset[i]["audio"] for i in range(len(clips_or_dataset))], clips_or_dataset.metadata()
    clips, metas = [], []
    for i, c in enumerate(clips_or_dataset):
        if isinstance(c, Mapping):
            if "audio" not in c:
                raise TypeError(f"item {i} is a dict without an 'audio' key")
            clips.append(c["audio"])
            metas.append({k: v for k, v in c.items() if k != "audio"})
        else:
            clips.append(c)
            metas.append({})
    return clips, metas


def _references(metas: list[dict[str, Any]], references: Sequence[str] | None) -> list[str]:
    """``references``, or each item's ``text``; one per clip."""
    if references is None:
        missing = [i for i, m in enumerate(metas) if not isinstance(m.get("text"), str)]
        if missing:
            raise ValueError(f"no references given and items {missing[:5]} carry no 'text'; pass references=[...]")
        references = [m["text"] for m in metas]
    references = list(references)
    if len(references) != len(metas):
        raise ValueError(f"{len(metas)} clips but {len(references)} references: give one reference per clip")
    return references


def _length_gap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return abs(a[0] - b[0]), abs(a[1] - b[1])


def _length_matched_pairs(
    zero: list[int], high: list[int], lengths: list[tuple[int, int]], n_pairs: int | None, max_length_diff: int | None
) -> list[tuple[int, int]]:
    """(zero-WER, high-WER) pairs: each high-WER clip in turn takes the unused zero-WER clip
    closest in (words, chars, index), skipped when the word gap exceeds ``max_length_diff``."""
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for h in high:
        if n_pairs is not None and len(pairs) >= n_pairs:
            break
        free = [z for z in zero if z not in used]
        if not free:
            break
        z = min(free, key=lambda z: (*_length_gap(lengths[z], lengths[h]), z))
        if max_length_diff is not None and abs(lengths[z][0] - lengths[h][0]) > max_length_diff:
            continue
        used.add(z)
        pairs.append((z, h))
    return pairs


def _extra_wrong(
    pairs: list[tuple[int, int]],
    high: list[int],
    lengths: list[tuple[int, int]],
    n_wrong: int,
    max_length_diff: int | None,
) -> list[tuple[int, int]]:
    """(pair index, high-WER clip) for the next unpaired high-WER clips, each matched in
    length to an already paired zero-WER clip (reused), until ``n_wrong`` label-1 items."""
    taken = {h for _, h in pairs}
    extras: list[tuple[int, int]] = []
    for h in high:
        if len(pairs) + len(extras) >= n_wrong:
            break
        if h in taken:
            continue
        p = min(range(len(pairs)), key=lambda q: (*_length_gap(lengths[pairs[q][0]], lengths[h]), q))
        if max_length_diff is not None and abs(lengths[pairs[p][0]][0] - lengths[h][0]) > max_length_diff:
            continue
        taken.add(h)
        extras.append((p, h))
    return extras


def _short(msg: str, strict: bool) -> None:
    if strict:
        raise ValueError(msg)
    warnings.warn(msg, stacklevel=3)  # the caller of hallucination_dataset


__all__ = ["HALLUCINATION_KINDS", "hallucination_dataset", "hallucination_prone_inputs", "transcribe_all"]
