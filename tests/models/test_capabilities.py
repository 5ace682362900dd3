"""The model contract (hooked_asr/models/base.py ModelCapabilities): what each model declares is
what it does. A declared resume point gives the full run's numbers, encode takes the inputs
declared, and a missing capability is an error that names it, not a silent slow path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr import HookedQwen2Audio, HookedWhisper
from hooked_asr.models.base import ModelCapabilities
from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer


@pytest.fixture(scope="module")
def models():
    return {
        "whisper": HookedWhisper.from_hf(make_hf_whisper("v3-128mel")),
        "qwen": HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer()),
    }


def _audio(model):
    return (0.1 * np.random.default_rng(0).standard_normal(model.cfg.encoder.n_frames * 100)).astype(np.float32)


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_encode_inputs_are_what_prepare_features_gives(which, models):
    model = models[which]
    assert isinstance(model.capabilities, ModelCapabilities)
    assert set(model.prepare_features(_audio(model))) == set(model.capabilities.encode_inputs)


@pytest.mark.parametrize("which", ["whisper", "qwen"])
@pytest.mark.parametrize("layer", [0, 1])
def test_declared_resume_points_give_the_full_encoder_output(which, layer, models):
    model = models[which]
    caps = model.capabilities
    assert caps.resume_at_block and caps.resume_at_head  # both models declare both
    if which == "whisper":  # the random Whisper reads a short window: features of its own size
        feats = {
            "input_features": torch.randn(
                1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames, generator=torch.Generator().manual_seed(0)
            )
        }
    else:
        feats = model.prepare_features(_audio(model))
    names = [f"encoder.blocks.{layer}.hook_resid_pre", f"encoder.blocks.{layer}.attn.hook_z"]
    _, cache = (
        model.run_with_cache(**feats, decoder_input_ids=torch.tensor([[1, 2]]), names_filter=names)
        if which == "whisper"
        else (None, None)
    )
    if cache is None:  # Qwen2-Audio: the encoder alone (its forward needs a prompt with placeholders)
        cache = {}
        with model.hooks([(n, lambda t, hook: cache.__setitem__(hook.name, t.clone())) for n in names]):
            full = model.encode(**feats)
    else:
        full = model.encode(**feats)
    extra = {k: v for k, v in feats.items() if k != "input_features"}
    block = model.encode(cache[names[0]], start_at_layer=layer, **extra)
    head = model.encode(cache[names[0]], start_at_layer=layer, attn_z=cache[names[1]], **extra)
    torch.testing.assert_close(block, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(head, full, rtol=0, atol=1e-5)


def test_a_missing_capability_is_an_error_that_names_it(models):
    qwen = models["qwen"]
    assert not qwen.capabilities.prefix_sharing and models["whisper"].capabilities.prefix_sharing
    with pytest.raises(NotImplementedError, match="'prefix_sharing'.*HookedQwen2Audio"):
        qwen.require("prefix_sharing", "generate_from_prefix")
    with pytest.raises(NotImplementedError, match="transcribe\\(word_timestamps=True\\) needs 'word_timestamps'"):
        qwen.transcribe(_audio(qwen), word_timestamps=True, max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="'timestamps'"):
        qwen.transcribe(_audio(qwen), without_timestamps=False, max_new_tokens=2)
    with pytest.raises(ValueError, match="unknown capability 'flying'"):
        qwen.require("flying", "x")
    models["whisper"].require("prefix_sharing", "generate_from_prefix")  # declared: no error


@pytest.mark.parametrize("which", ["whisper", "qwen"])
def test_encode_has_the_same_signature_on_both_models(which, models):
    import inspect

    model = models[which]
    params = list(inspect.signature(model.encode).parameters)
    # the declared model inputs first, then the same resume keywords on every model
    assert params == [*model.capabilities.encode_inputs, "stop_at_layer", "start_at_layer", "attn_z"]
