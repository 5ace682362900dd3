"""A full cache stores an attention's scores, not also its pattern (hooked_asr/models/activation_cache.py,
models/cache_size.py): every cached value is unchanged against the plain-dict cache, which stores both,
the estimate equals the bytes held, and a pattern that could differ from softmax(scores) is stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr import HookedQwen2Audio, HookedWhisper
from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer


@pytest.fixture(scope="module")
def whisper():
    return HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))


@pytest.fixture(scope="module")
def qwen():
    return HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())


def _inputs(model):
    if isinstance(model, HookedWhisper):
        g = torch.Generator().manual_seed(0)
        return {
            "input_features": torch.randn(2, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames, generator=g),
            "decoder_input_ids": torch.randint(0, 1000, (2, 6), generator=g),
        }
    audio = (0.1 * np.random.default_rng(0).standard_normal(model.cfg.encoder.n_frames * 160)).astype(np.float32)
    return model.teacher_forced_inputs(audio, [7, 8, 9]).kwargs


def _bytes(d):
    return sum(v.numel() * v.element_size() for v in d.values())


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_full_cache_keeps_scores_and_rebuilds_every_pattern_bit_for_bit(which, whisper, qwen):
    model = whisper if which == "whisper" else qwen
    inputs = _inputs(model)
    _, plain = model.run_with_cache(**inputs, return_cache_object=False)
    _, cache = model.run_with_cache(**inputs, return_cache_object=True)
    patterns = [n for n in plain if n.endswith("hook_pattern")]
    assert patterns and sorted(cache.derived) == sorted(patterns)
    assert not any(n.endswith("hook_pattern") for n in cache.cache_dict)
    assert list(cache) == list(plain)  # same names, same (forward) order
    assert len(cache) == len(plain) and all(n in cache for n in plain)
    for name, value in plain.items():
        assert torch.equal(cache[name], value), name
    assert cache.nbytes == _bytes(plain) - _bytes({n: plain[n] for n in patterns})
    est = model.estimate_cache_size(**inputs, return_cache_object=True)
    assert est.total_bytes == cache.nbytes and sorted(est.derived) == sorted(patterns)
    assert est.per_hook == {k: v.numel() * v.element_size() for k, v in cache.cache_dict.items()}
    # The dict estimate still counts both (it stores both).
    assert model.estimate_cache_size(**inputs, return_cache_object=False).total_bytes == _bytes(plain)


def test_pattern_alone_is_stored_and_helpers_see_derived_patterns(whisper):
    inputs = _inputs(whisper)
    _, cache = whisper.run_with_cache(
        **inputs, names_filter=lambda n: n.endswith("hook_pattern"), return_cache_object=True
    )
    assert not cache.derived and all(n.endswith("hook_pattern") for n in cache.cache_dict)
    _, full = whisper.run_with_cache(**inputs, return_cache_object=True)
    _, plain = whisper.run_with_cache(**inputs, return_cache_object=False)
    assert torch.equal(full["pattern", 0, "encoder"], plain["encoder.blocks.0.attn.hook_pattern"])
    one = full.apply_slice_to_batch_dim(1)
    assert "decoder.blocks.1.cross_attn.hook_pattern" in one.derived
    assert torch.equal(one["cross_pattern", 1], plain["decoder.blocks.1.cross_attn.hook_pattern"][1])


def test_a_hook_between_scores_and_pattern_keeps_the_pattern_stored(whisper):
    inputs = _inputs(whisper)
    name = "decoder.blocks.0.attn.hook_attn_scores"
    with whisper.hooks([(name, lambda t, hook: t * 0.5)]):
        _, plain = whisper.run_with_cache(**inputs, return_cache_object=False)
        _, cache = whisper.run_with_cache(**inputs, return_cache_object=True)
    pattern = "decoder.blocks.0.attn.hook_pattern"
    assert pattern in cache.cache_dict and pattern not in cache.derived
    assert "decoder.blocks.1.attn.hook_pattern" in cache.derived
    for n, v in plain.items():
        assert torch.equal(cache[n], v), n


@pytest.mark.parametrize("kw", [{"frame_slice": [0, 3, 5]}, {"dtype": torch.float16}])
def test_no_pattern_rebuilt_where_the_softmax_would_differ(kw, whisper):
    inputs = _inputs(whisper)
    _, plain = whisper.run_with_cache(**inputs, return_cache_object=False, **kw)
    _, cache = whisper.run_with_cache(**inputs, return_cache_object=True, **kw)
    cross = [n for n in plain if "cross_attn.hook_pattern" in n]
    assert cross and not any(n in cache.derived for n in cross)
    assert whisper.estimate_cache_size(**inputs, return_cache_object=True, **kw).total_bytes == cache.nbytes
    for n, v in plain.items():
        assert torch.equal(cache[n], v), n
