"""Fixtures of the decoding tests: Hugging Face's Whisper built from the very weights our real
checkpoints load (the converted HF-layout cache). The real checkpoints and espeak speech with
pauses of known length are in the root conftest.py (e2e/ uses them too)."""

from __future__ import annotations

import functools

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


@pytest.fixture(scope="session")
def hf_tiny_en(whisper_tiny_en):
    return hf_whisper("whisper-tiny.en")


@pytest.fixture(scope="session")
def hf_base(whisper_base):
    return hf_whisper("whisper-base")
