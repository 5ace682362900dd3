"""Labelled audio sets built offline: espeak-ng speech, noise, tones, music.

Every builder returns a :class:`LabelledDataset`: a ``Sequence`` whose items are dicts
``{"audio": float32 16 kHz, "label": int, "label_name": str, ...metadata}``, the shape
:func:`hooked_asr.activations.extract_activations` reads. Numeric metadata (ints, floats)
becomes label tensors there, strings go in the store's header, so every item of one
dataset carries the same keys.

Builders are deterministic in ``seed``: the same call gives bit-identical audio, a
different seed different audio. Items are ordered class-interleaved (``j``-th item of class
0, ``j``-th of class 1, ...), so any prefix of the dataset is balanced, and where it makes
sense the ``j``-th item of every class shares its sentence (and voice) so that the label is
the only thing that differs systematically. ``dataset.dataset_id`` names the builder, its
parameters and a digest of the content (metadata and audio bytes): it changes when the
content changes, which is what the resumable activation store keys on.

Builders: :func:`gender_dataset`, :func:`accent_dataset`, :func:`language_dataset`,
:func:`speech_nonspeech_dataset`, :func:`noisy_dataset`, :func:`semantic_dataset`,
:func:`hallucination_prone_inputs` and :func:`hallucination_dataset` (needs a model).

Where things live: :mod:`.dataset` (the container, its digest and folder format),
:mod:`.texts` and :mod:`.voices` (what is said, and by which espeak-ng voices),
:mod:`._build` (what every builder shares), and the builders by what their labels stand
for: :mod:`.voice_attributes` (gender, accent, language), :mod:`.noise` (speech vs
non-speech, clean vs noisy), :mod:`.semantic` (word category), :mod:`.hallucination`
(hallucination-prone inputs, correct vs hallucinated transcripts).
"""

from hooked_asr.datasets.labelled.dataset import LabelledDataset
from hooked_asr.datasets.labelled.hallucination import (
    HALLUCINATION_KINDS,
    hallucination_dataset,
    hallucination_prone_inputs,
    transcribe_all,
)
from hooked_asr.datasets.labelled.noise import noisy_dataset, speech_nonspeech_dataset
from hooked_asr.datasets.labelled.semantic import semantic_dataset
from hooked_asr.datasets.labelled.texts import CATEGORY_WORDS, LANGUAGE_SENTENCES, SENTENCES
from hooked_asr.datasets.labelled.voice_attributes import accent_dataset, gender_dataset, language_dataset
from hooked_asr.datasets.labelled.voices import ACCENT_VOICES, FEMALE_VARIANTS, LANGUAGE_VOICES, MALE_VARIANTS

__all__ = [
    "ACCENT_VOICES",
    "CATEGORY_WORDS",
    "FEMALE_VARIANTS",
    "HALLUCINATION_KINDS",
    "LANGUAGE_SENTENCES",
    "LANGUAGE_VOICES",
    "LabelledDataset",
    "MALE_VARIANTS",
    "SENTENCES",
    "accent_dataset",
    "gender_dataset",
    "hallucination_dataset",
    "hallucination_prone_inputs",
    "language_dataset",
    "noisy_dataset",
    "semantic_dataset",
    "speech_nonspeech_dataset",
    "transcribe_all",
]
