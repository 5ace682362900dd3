"""The espeak-ng voices the builders speak with: voice per language and per accent, the
male and female variants, and the checks and draws over them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# language code -> espeak-ng voice
LANGUAGE_VOICES: dict[str, str] = {
    "en": "en-us",
    "de": "de",
    "fr": "fr",
    "es": "es",
    "it": "it",
    "pt": "pt",
    "nl": "nl",
}

# accent label -> espeak-ng voice ("en-gb" is espeak's "en" voice, British English)
ACCENT_VOICES: dict[str, str] = {
    "en-us": "en-us",
    "en-gb": "en",
    "en-gb-scotland": "en-gb-scotland",
    "en-029": "en-029",
    "en-gb-x-rp": "en-gb-x-rp",
    "en-us-nyc": "en-us-nyc",
    "en-gb-x-gbclan": "en-gb-x-gbclan",
    "en-gb-x-gbcwmd": "en-gb-x-gbcwmd",
}

# espeak-ng voice variants ("" is the voice's own, male, default)
MALE_VARIANTS: tuple[str, ...] = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7")
FEMALE_VARIANTS: tuple[str, ...] = ("+f1", "+f2", "+f3", "+f4", "+f5")
DEFAULT_VOICES: tuple[str, ...] = ("en-us", "en", "en-gb-scotland", "en-029")


def check_voices(voices: str | Sequence[str]) -> list[str]:
    """``voices`` as a list, each a known espeak-ng voice (a variant such as ``+f3`` allowed)."""
    from hooked_asr.datasets.espeak import list_voices

    known = set(list_voices())
    voices = [voices] if isinstance(voices, str) else list(voices)
    bad = [v for v in voices if v.split("+")[0] not in known]
    if bad or not voices:
        raise ValueError(
            f"unknown espeak-ng voice(s) {bad or voices}; valid: {', '.join(sorted(known))} "
            "(add a variant like '+f3' or '+m3')"
        )
    return voices


def random_voice(rng: np.random.Generator, voices: Sequence[str]) -> str:
    """A voice of ``voices`` with a random male or female variant."""
    var = (MALE_VARIANTS + FEMALE_VARIANTS)[int(rng.integers(len(MALE_VARIANTS) + len(FEMALE_VARIANTS)))]
    return voices[int(rng.integers(len(voices)))] + var


__all__ = [
    "ACCENT_VOICES",
    "DEFAULT_VOICES",
    "FEMALE_VARIANTS",
    "LANGUAGE_VOICES",
    "MALE_VARIANTS",
    "check_voices",
    "random_voice",
]
