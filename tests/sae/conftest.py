"""Fixtures for the SAE tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def model_30s():
    """A tiny random Whisper whose encoder reads real 30 s windows (1500 frames)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from hooked_asr import HookedWhisper

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=1, decoder_layers=1, d_model=32,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=32, attn_implementation="eager")
    hf = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if not name.endswith("embed_positions.weight") or "decoder" in name:
                p.normal_(0.0, 0.15)
    return HookedWhisper.from_hf(hf)
