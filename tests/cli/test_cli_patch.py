"""`hooked-asr patch` (hooked_asr/cli/patch.py): table, JSON and heatmap from a saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_cli_writes_table_json_and_heatmap(tmp_path):
    """A random 30 s-window Whisper saved to disk; alpha = 0 must change no transcript."""
    import soundfile as sf
    from tests.conftest import WHISPER_SHAPES
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from hooked_asr.cli import main

    torch.manual_seed(0)
    cfg = WhisperConfig(
        **{
            **WHISPER_SHAPES["en-80mel"],
            "max_source_positions": 1500,
            "d_model": 32,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
        },
        attn_implementation="eager",
    )
    hf = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if not name.endswith("embed_positions.weight") or "decoder" in name:
                p.normal_(0.0, 0.15)
    hf.save_pretrained(tmp_path / "model", safe_serialization=True)
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no tokenizer.json"):  # a random HF model is saved without one
        rc = main(
            [
                "patch",
                str(wav),
                "--model",
                str(tmp_path / "model"),
                "--stacks",
                "decoder",
                "--kinds",
                "cross_attn",
                "--alpha",
                "0",
                "--max-new-tokens",
                "5",
                "--out",
                str(out),
                "--no-progress",
                "--metrics",
                "changed",
                "n_tokens",
            ]
        )
    assert rc == 0
    import pandas as pd

    table = pd.read_csv(out / "patch.csv")
    assert len(table) == 2 * 4 * 2  # 2 layers x 4 heads x 2 metrics
    assert (table.query("metric == 'changed'")["value"] == 0).all()
    assert (table["value"] == table["clean"]).all()
    summary = json.loads((out / "patch.json").read_text())["summary"]
    assert set(summary) == {f"decoder.blocks.{l}.cross_attn.head.{h}" for l in range(2) for h in range(4)}
    assert (out / "heatmap_changed.png").stat().st_size > 1000
