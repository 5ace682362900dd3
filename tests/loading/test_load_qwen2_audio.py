"""load_model on a local Hugging Face Qwen2-Audio folder (hooked_asr/loading/registry.py): the
model load_model builds gives the logits of the one HookedQwen2Audio.from_hf builds from the
same in-memory model, and the folder's tokenizer comes with it."""

from __future__ import annotations

import numpy as np
import torch

import hooked_asr
from hooked_asr import HookedQwen2Audio
from tests.conftest import make_hf_qwen2_audio, make_tokenizer


def test_load_model_reads_a_qwen2_audio_folder(tmp_path):
    hf = make_hf_qwen2_audio("gqa")
    d = tmp_path / "tiny-qwen2-audio-instruct"
    hf.save_pretrained(d)
    make_tokenizer().save(str(d / "tokenizer.json"))
    model = hooked_asr.load_model(d)
    assert isinstance(model, HookedQwen2Audio) and model.tokenizer is not None
    assert next(model.parameters()).dtype == torch.float32  # load_model's dtype, not from_pretrained's bf16
    ref = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    audio = (0.1 * np.random.default_rng(0).standard_normal(model.cfg.encoder.n_frames * 160)).astype(np.float32)
    inputs = ref.teacher_forced_inputs(audio, [7, 8, 9]).kwargs
    torch.testing.assert_close(model(**inputs), ref(**inputs), rtol=0, atol=1e-5)
