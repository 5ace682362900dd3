"""The same lens code on Qwen2-Audio (a decoder-only LM reading the audio as a prefix)."""

from __future__ import annotations

import torch

from hooked_asr.lens import encoder_lens, logit_lens, logit_lens_generate


def test_lenses_are_model_agnostic_on_qwen2_audio():
    import numpy as np

    from hooked_asr import HookedQwen2Audio
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    hf = make_hf_qwen2_audio("mha")
    model = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    window = 2 * hf.config.audio_config.max_source_positions * 160
    clip = 0.15 * np.random.default_rng(0).standard_normal(window - 1000).astype(np.float32)
    gen = logit_lens_generate(model, clip, max_new_tokens=6, keep_logits=True)
    tf = logit_lens(model, clip, gen.tokens.tolist(), append_eos=False, keep_logits=True)
    torch.testing.assert_close(gen.logits, tf.logits, atol=1e-4, rtol=1e-4)
    inputs = model.teacher_forced_inputs(clip, tf.tokens.tolist())
    p = inputs.prompt_len
    with torch.no_grad():
        logits = model(**inputs.kwargs)[0, p - 1 : p - 1 + tf.n_steps]
    torch.testing.assert_close(tf.logits[-1], logits, atol=1e-5, rtol=1e-5)
    final = model.transcribe(clip, max_new_tokens=6)
    res = encoder_lens(model, clip, max_new_tokens=6, final=final)
    assert len(res.layers) == model.n_layers["encoder"] and res.layers[-1].tokens == final.tokens
