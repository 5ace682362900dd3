"""The README's tour, lens and patching examples run as written on the real tiny.en, and what
they print is what the library computes another way. (The probe and SAE examples run in
notebooks 04 and 05.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_tour_lens_and_patching_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert "run_with_cache" in blocks[0] and "encoder_lens" in blocks[1] and "sweep(" in blocks[2]
    ns: dict = {}
    for i, code in enumerate(blocks[:3]):
        exec(compile(code, f"README.md python block {i}", "exec"), ns)
    model, out = ns["model"], ns["out"]
    # the cached logits are the plain forward's
    torch.testing.assert_close(ns["logits"], model(**ns["inputs"].kwargs), rtol=0, atol=0)
    assert ns["cache"]["decoder.blocks.3.hook_resid_post"].shape[-1] == model.cfg.decoder.d_model
    # the lens's last layer is the model's own choice at every step; the encoder lens's last layer is the transcript
    lens = ns["lens"]
    assert torch.equal(lens.top1[-1], lens.final)
    assert ns["enc"].layers[-1].tokens == list(out.tokens)
    # one row per decoder cross-attention head
    heads = model.cfg.decoder.n_layers * model.cfg.decoder.n_heads
    assert ns["result"].table["component"].nunique() == heads
