"""Qwen2-Audio on the shared decoding core: beam search equals HF's, sampling is seeded, audio
longer than the tower's window is transcribed window by window (tiny random models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.utils import GenerationMixin

from hooked_asr.components.projector import audio_token_counts
from hooked_asr.models.qwen2_audio import HookedQwen2Audio

from tests.conftest import SPECIAL_TOKENS, make_hf_qwen2_audio, make_tokenizer


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_qwen2_audio("mha")
    return hf, HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())


def test_beam_search_equals_hf(pair):
    hf, model = pair
    n_frames = 2 * hf.config.audio_config.max_source_positions
    feats = torch.randn(2, hf.config.audio_config.num_mel_bins, n_frames, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, n_frames, dtype=torch.long)
    prompt = model.transcription_prompt(int(audio_token_counts(mask)[1][0]))
    ids = torch.tensor([prompt] * 2)
    eos = SPECIAL_TOKENS.index("<|im_end|>")
    with torch.no_grad():
        ref = GenerationMixin.generate(
            hf,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            input_features=feats,
            feature_attention_mask=mask,
            max_new_tokens=8,
            do_sample=False,
            num_beams=3,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    ours = model.generate(
        feats,
        prompt,
        num_beams=3,
        max_new_tokens=8,
        eos_token_id=eos,
        feature_attention_mask=mask,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    assert ours.sequences.tolist() == ref.tolist()
    greedy = model.generate(
        feats,
        prompt,
        max_new_tokens=8,
        eos_token_id=eos,
        feature_attention_mask=mask,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    assert greedy.tokens.tolist() != ours.tokens.tolist()  # the beams found another continuation


def test_sampling_is_reproducible_and_differs_from_greedy(pair):
    _, model = pair
    window = model._window_samples()
    clip = 0.15 * np.random.default_rng(0).standard_normal(window - 500).astype(np.float32)
    torch.manual_seed(0)
    a = model.transcribe(
        clip, temperature=1.0, max_new_tokens=8, compression_ratio_threshold=None, logprob_threshold=None
    )
    torch.manual_seed(0)
    b = model.transcribe(
        clip, temperature=1.0, max_new_tokens=8, compression_ratio_threshold=None, logprob_threshold=None
    )
    g = model.transcribe(clip, max_new_tokens=8)
    assert a.tokens == b.tokens and a.segments[0].temperature == 1.0
    assert a.tokens != g.tokens


def test_long_audio_is_transcribed_window_by_window(pair):
    _, model = pair
    window = model._window_samples()
    rng = np.random.default_rng(1)
    pieces = [0.15 * rng.standard_normal(window).astype(np.float32) for _ in range(2)] + [
        0.15 * rng.standard_normal(window // 2).astype(np.float32)
    ]
    whole = model.transcribe(np.concatenate(pieces), max_new_tokens=5)
    parts = model.transcribe(pieces, max_new_tokens=5)
    assert whole.extra["n_windows"] == 3
    assert whole.tokens == [t for p in parts for t in p.tokens]
    assert [round(s.start * 16000) for s in whole.segments] == [0, window, 2 * window][: len(whole.segments)]
