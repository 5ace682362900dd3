"""Fixtures of the lens tests: a random Whisper (3 decoder layers, 2 encoder layers) and its
Hugging Face twin, and random log-mel inputs."""

from __future__ import annotations

import pytest
import torch

from hooked_asr import HookedWhisper
from tests.conftest import make_hf_whisper


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_whisper("v3-128mel")  # 3 decoder layers, 2 encoder layers
    return hf, HookedWhisper.from_hf(hf)


def features(hf, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, hf.config.num_mel_bins, 2 * hf.config.max_source_positions, generator=g)
