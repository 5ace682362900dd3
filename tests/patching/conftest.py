"""Fixtures of the patching tests: a small random Whisper, two random inputs and their
teacher-forced inputs over one continuation."""

from __future__ import annotations

import pytest
import torch

CONT = [11, 22, 33, 44, 55]


@pytest.fixture(scope="module")
def model():
    from tests.conftest import make_hf_whisper

    from hooked_asr import HookedWhisper

    return HookedWhisper.from_hf(make_hf_whisper("en-80mel"))


@pytest.fixture(scope="module")
def feats(model):
    g = torch.Generator().manual_seed(0)
    shape = (1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.fixture(scope="module")
def tf(model, feats):
    return model.teacher_forced_inputs(feats[0], CONT), model.teacher_forced_inputs(feats[1], CONT)
