"""Fixtures for the SAE tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def model_30s():
    """A tiny random Whisper whose encoder reads real 30 s windows (1500 frames)."""
    from hooked_asr import HookedWhisper
    from tests.conftest import make_hf_whisper_30s

    hf = make_hf_whisper_30s()
    return HookedWhisper.from_hf(hf)
