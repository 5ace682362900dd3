"""Sets that differ in who speaks: gender, English accent, language (espeak-ng voices).

In group ``j`` every class says the same sentence (translated, for language) at the same
rate, so the voice attribute is the only thing that differs systematically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hooked_asr.datasets.labelled._build import check_choices, check_n, finish, render, sentence_plan
from hooked_asr.datasets.labelled.dataset import LabelledDataset
from hooked_asr.datasets.labelled.texts import LANGUAGE_SENTENCES, SENTENCES
from hooked_asr.datasets.labelled.voices import (
    ACCENT_VOICES,
    DEFAULT_VOICES,
    FEMALE_VARIANTS,
    LANGUAGE_VOICES,
    MALE_VARIANTS,
    check_voices,
)


def gender_dataset(
    n_per_class: int,
    seed: int = 0,
    voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 190),
    sentences: Sequence[str] = SENTENCES,
    progress: bool = True,
) -> LabelledDataset:
    """espeak-ng male vs female variants of several voices: label 0 = male, 1 = female.

    Pair ``j`` shares sentence, base voice and speaking rate; the male item uses a random
    male variant (the voice's default or ``+m1``..``+m7``, F0 ~ 95-110 Hz), the female item
    a random ``+f1``..``+f5`` (F0 ~ 180-215 Hz).
    """
    n = check_n(n_per_class)
    voices = check_voices(voices)
    rng = np.random.default_rng(seed)
    sids, rates = sentence_plan(rng, n, len(sentences), rate_range)
    records = []
    for j, sid in enumerate(sids):
        base = voices[int(rng.integers(len(voices)))]
        variants = (
            MALE_VARIANTS[int(rng.integers(len(MALE_VARIANTS)))],
            FEMALE_VARIANTS[int(rng.integers(len(FEMALE_VARIANTS)))],
        )
        for label, name in enumerate(("male", "female")):
            records.append(
                {
                    "label": label,
                    "label_name": name,
                    "text": sentences[sid],
                    "voice": base + variants[label],
                    "base_voice": base,
                    "rate": rates[j],
                    "sentence_id": sid,
                    "pair": j,
                }
            )
    audio = render(records, progress, "gender_dataset")
    return finish(
        "gender_dataset",
        {"n_per_class": n, "seed": seed, "voices": voices, "rate_range": rate_range},
        records,
        audio,
        ["male", "female"],
    )


def accent_dataset(
    accents: Sequence[str] = ("en-us", "en-gb", "en-gb-scotland", "en-029"),
    n_per_class: int = 50,
    seed: int = 0,
    rate_range: tuple[int, int] = (140, 190),
    variants: Sequence[str] = MALE_VARIANTS + FEMALE_VARIANTS,
    sentences: Sequence[str] = SENTENCES,
    progress: bool = True,
) -> LabelledDataset:
    """English accents as espeak-ng voices (label ``k`` = ``accents[k]``; ``"en-gb"`` is
    espeak's ``en``). Group ``j`` shares sentence, rate and voice variant across accents."""
    accents = check_choices("accent", accents, ACCENT_VOICES)
    n = check_n(n_per_class)
    rng = np.random.default_rng(seed)
    sids, rates = sentence_plan(rng, n, len(sentences), rate_range)
    records = []
    for j, sid in enumerate(sids):
        var = variants[int(rng.integers(len(variants)))]
        for label, acc in enumerate(accents):
            records.append(
                {
                    "label": label,
                    "label_name": acc,
                    "text": sentences[sid],
                    "voice": ACCENT_VOICES[acc] + var,
                    "variant": var or "default",
                    "rate": rates[j],
                    "sentence_id": sid,
                    "group": j,
                }
            )
    audio = render(records, progress, "accent_dataset")
    return finish(
        "accent_dataset",
        {"accents": accents, "n_per_class": n, "seed": seed, "rate_range": rate_range},
        records,
        audio,
        accents,
    )


def language_dataset(
    languages: Sequence[str] = ("en", "de", "fr", "es"),
    n_per_class: int = 16,
    seed: int = 0,
    rate_range: tuple[int, int] = (140, 180),
    variants: Sequence[str] = MALE_VARIANTS + FEMALE_VARIANTS,
    progress: bool = True,
) -> LabelledDataset:
    """Spoken language (label ``k`` = ``languages[k]``) from :data:`LANGUAGE_SENTENCES`,
    sixteen parallel sentences (translations of one another) per language. Group ``j``
    says the same sentence (translated) with the same rate and voice variant in every
    language; beyond 16 per class sentences repeat with other variants and rates."""
    languages = check_choices("language", languages, LANGUAGE_SENTENCES)
    n = check_n(n_per_class)
    rng = np.random.default_rng(seed)
    sids, rates = sentence_plan(rng, n, len(LANGUAGE_SENTENCES["en"]), rate_range)
    records = []
    for j, sid in enumerate(sids):
        var = variants[int(rng.integers(len(variants)))]
        for label, lang in enumerate(languages):
            records.append(
                {
                    "label": label,
                    "label_name": lang,
                    "text": LANGUAGE_SENTENCES[lang][sid],
                    "voice": LANGUAGE_VOICES[lang] + var,
                    "rate": rates[j],
                    "sentence_id": sid,
                    "group": j,
                }
            )
    audio = render(records, progress, "language_dataset")
    return finish(
        "language_dataset", {"languages": languages, "n_per_class": n, "seed": seed}, records, audio, languages
    )


__all__ = ["accent_dataset", "gender_dataset", "language_dataset"]
