"""Small models and cached runs shared by the circuit tests (random weights; real tiny.en via
the session fixture of tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="package")
def whisper_rand():
    from hooked_asr import HookedWhisper

    return HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))


@pytest.fixture(scope="package")
def qwen_gqa():
    from hooked_asr import HookedQwen2Audio

    return HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())


def whisper_inputs(model, n_tok: int = 6, batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames, generator=g)
    toks = torch.randint(0, 1000, (batch, n_tok), generator=g)
    return {"input_features": mel, "decoder_input_ids": toks}


def qwen_inputs(model, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(model.cfg.encoder.n_frames * 160)).astype(np.float32)
    return model.teacher_forced_inputs(audio, [7, 8, 9]).kwargs
