"""Qwen2-Audio's projector (hooked_asr/components/projector.py) equals Hugging Face's
``multi_modal_projector`` on the same weights."""

from __future__ import annotations

import torch

from hooked_asr import HookedQwen2Audio
from tests.conftest import make_hf_qwen2_audio, make_tokenizer


def test_projector_equals_hf_multi_modal_projector():
    hf = make_hf_qwen2_audio("gqa")
    model = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    x = torch.randn(3, 7, hf.config.audio_config.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.projector(x), hf.model.multi_modal_projector(x), atol=1e-6, rtol=1e-6)
