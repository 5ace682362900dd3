"""Fixtures of the decoding tests: Hugging Face's Whisper built from the very weights our real
checkpoints load (the converted HF-layout cache), and espeak speech with pauses of known length."""

from __future__ import annotations

import functools

import numpy as np
import pytest


@functools.lru_cache(maxsize=2)
def hf_whisper(name: str):
    from transformers import WhisperForConditionalGeneration

    from hooked_asr.loading.registry import weights_dir

    hf = WhisperForConditionalGeneration.from_pretrained(weights_dir() / name, attn_implementation="eager").eval()
    gc = hf.generation_config
    gc.max_initial_timestamp_index = 50  # openai-whisper's max_initial_timestamp = 1.0 s
    gc.prev_sot_token_id = gc.no_timestamps_token_id - 2
    return hf


SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow.",
    "Our train leaves the station at seven in the morning.",
    "She planted tomatoes and beans in the small garden behind the house.",
    "The library closes early on Sundays during the summer.",
    "He bought fresh bread and a bottle of milk at the corner shop.",
    "We walked along the river until the sun went down.",
    "The children played football in the park after school.",
    "My brother is learning to play the piano this year.",
    "The museum has a new exhibition about ancient boats.",
    "They painted the kitchen a bright shade of yellow.",
    "A large dog was sleeping under the wooden table.",
    "The doctor told him to drink more water every day.",
    "Our neighbours are moving to a bigger house next month.",
    "The teacher wrote three questions on the board.",
    "I left my umbrella on the bus this morning.",
    "The cake needs another ten minutes in the oven.",
    "Birds were singing in the trees outside my window.",
    "The bridge was closed because of the heavy snow.",
    "She reads a chapter of her book before going to sleep.",
    "The farmer sold apples and pears at the market.",
    "We need to buy new tyres for the car soon.",
]


def speech_with_pauses(synthesize, sentences=SENTENCES, pause_s: float = 0.6) -> tuple[np.ndarray, str]:
    """``(audio, reference text)``: each sentence spoken by espeak, then ``pause_s`` of silence."""
    pause = np.zeros(int(16000 * pause_s), dtype=np.float32)
    parts = []
    for s in sentences:
        parts += [synthesize(s), pause]
    return np.concatenate(parts), " ".join(sentences)


@pytest.fixture(scope="session")
def hf_tiny_en(whisper_tiny_en):
    return hf_whisper("whisper-tiny.en")


@pytest.fixture(scope="session")
def hf_base(whisper_base):
    return hf_whisper("whisper-base")


@pytest.fixture(scope="session")
def long_speech():
    """~75 s of espeak speech (22 sentences, 0.6 s pauses) and its text."""
    from hooked_asr.datasets.espeak import synthesize

    return speech_with_pauses(synthesize)
