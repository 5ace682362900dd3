"""Sets that differ in what surrounds or replaces the speech: speech vs non-speech of the
same duration, and the same utterances clean vs in noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hooked_asr.audio import SAMPLE_RATE
from hooked_asr.datasets.labelled._build import check_kinds, check_n, finish, sentence_plan, speak
from hooked_asr.datasets.labelled.dataset import LabelledDataset, progress_bar
from hooked_asr.datasets.labelled.texts import SENTENCES
from hooked_asr.datasets.labelled.voices import DEFAULT_VOICES, check_voices, random_voice
from hooked_asr.datasets.nonspeech import NONSPEECH_KINDS, mix_at_snr, nonspeech_clip


def speech_nonspeech_dataset(
    n_per_class: int,
    seed: int = 0,
    kinds: Sequence[str] = NONSPEECH_KINDS,
    voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 190),
    progress: bool = True,
) -> LabelledDataset:
    """Label 1 = speech (a sentence, random voice and variant), 0 = non-speech of the same
    duration as its paired speech item (``kinds`` cycled in a seeded order: noise colours,
    tones, chirps, synthetic music; each run of ``len(kinds)`` pairs holds every kind once).
    Speech keeps espeak's level; non-speech peaks at a
    level drawn uniformly in [0.2, 0.8]."""
    n = check_n(n_per_class)
    kinds = check_kinds("non-speech kind", kinds, NONSPEECH_KINDS)
    voices = check_voices(voices)
    rng = np.random.default_rng(seed)
    sids, rates = sentence_plan(rng, n, len(SENTENCES), rate_range)
    # every block of len(kinds) consecutive pairs holds each kind once, in a seeded order
    kind_order = [kinds[int(k)] for _ in range(-(-n // len(kinds))) for k in rng.permutation(len(kinds))][:n]
    records, audio = [], []
    for j in progress_bar(range(n), progress, "speech_nonspeech_dataset"):
        sid = sids[j]
        voice = random_voice(rng, voices)
        speech = speak(SENTENCES[sid], voice, rates[j], None)
        clip_seed = int(rng.integers(2**31))
        peak = float(rng.uniform(0.2, 0.8))
        other = nonspeech_clip(kind_order[j], speech.size / SAMPLE_RATE, clip_seed, peak=peak)[: speech.size]
        records.append(
            {
                "label": 0,
                "label_name": "nonspeech",
                "kind": kind_order[j],
                "text": "",
                "voice": "",
                "pair": j,
                "clip_seed": clip_seed,
            }
        )
        audio.append(other)
        records.append(
            {
                "label": 1,
                "label_name": "speech",
                "kind": "speech",
                "text": SENTENCES[sid],
                "voice": voice,
                "pair": j,
                "clip_seed": -1,
            }
        )
        audio.append(speech)
    return finish(
        "speech_nonspeech_dataset",
        {"n_per_class": n, "seed": seed, "kinds": kinds},
        records,
        audio,
        ["nonspeech", "speech"],
    )


def noisy_dataset(
    n_per_class: int,
    snr_db: float = 5.0,
    seed: int = 0,
    noise_kinds: Sequence[str] = ("white", "pink", "brown"),
    voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 190),
    progress: bool = True,
) -> LabelledDataset:
    """The same utterances clean (label 0) and with noise at ``snr_db`` (label 1).

    Pair ``j``: one sentence said by one voice; the noisy copy adds noise of a kind from
    ``noise_kinds`` (seeded) with :func:`mix_at_snr` (scaled down together only if the
    mixture would clip)."""
    n = check_n(n_per_class)
    if not isinstance(snr_db, (int, float, np.integer, np.floating)) or not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    noise_kinds = check_kinds("noise kind", noise_kinds, NONSPEECH_KINDS)
    voices = check_voices(voices)
    rng = np.random.default_rng(seed)
    sids, rates = sentence_plan(rng, n, len(SENTENCES), rate_range)
    records, audio = [], []
    for j in progress_bar(range(n), progress, "noisy_dataset"):
        sid = sids[j]
        voice = random_voice(rng, voices)
        kind = noise_kinds[int(rng.integers(len(noise_kinds)))]
        clip_seed = int(rng.integers(2**31))
        clean = speak(SENTENCES[sid], voice, rates[j], None)
        noisy = mix_at_snr(clean, nonspeech_clip(kind, clean.size / SAMPLE_RATE, clip_seed), float(snr_db))
        base = {
            "text": SENTENCES[sid],
            "voice": voice,
            "rate": rates[j],
            "sentence_id": sid,
            "pair": j,
            "clip_seed": clip_seed,
        }
        records.append({"label": 0, "label_name": "clean", "noise": "none", **base})
        audio.append(clean)
        records.append({"label": 1, "label_name": "noisy", "noise": kind, **base})
        audio.append(noisy)
    return finish(
        "noisy_dataset",
        {"n_per_class": n, "snr_db": float(snr_db), "seed": seed, "noise_kinds": list(noise_kinds)},
        records,
        audio,
        ["clean", "noisy"],
    )


__all__ = ["noisy_dataset", "speech_nonspeech_dataset"]
