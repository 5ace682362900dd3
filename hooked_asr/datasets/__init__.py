"""Labelled audio sets built offline (espeak-ng speech, noise, tones), contrastive audio pairs and loaders for real corpora."""

from hooked_asr.datasets.contrastive import ContrastivePair, contrastive_pairs, word_swap
from hooked_asr.datasets.corpora import CorpusError, load_common_voice, load_librispeech
from hooked_asr.datasets.labelled import (
    CATEGORY_WORDS,
    LANGUAGE_SENTENCES,
    SENTENCES,
    LabelledDataset,
    accent_dataset,
    gender_dataset,
    hallucination_dataset,
    hallucination_prone_inputs,
    language_dataset,
    noisy_dataset,
    semantic_dataset,
    speech_nonspeech_dataset,
)
from hooked_asr.datasets.nonspeech import (
    brown_noise,
    chirp,
    mix_at_snr,
    nonspeech_clip,
    pink_noise,
    silence,
    synthetic_music,
    tone,
    white_noise,
)

__all__ = [
    "CATEGORY_WORDS",
    "ContrastivePair",
    "contrastive_pairs",
    "word_swap",
    "CorpusError",
    "LANGUAGE_SENTENCES",
    "LabelledDataset",
    "SENTENCES",
    "accent_dataset",
    "brown_noise",
    "chirp",
    "gender_dataset",
    "hallucination_dataset",
    "hallucination_prone_inputs",
    "language_dataset",
    "load_common_voice",
    "load_librispeech",
    "mix_at_snr",
    "noisy_dataset",
    "nonspeech_clip",
    "pink_noise",
    "semantic_dataset",
    "silence",
    "speech_nonspeech_dataset",
    "synthetic_music",
    "tone",
    "white_noise",
]
