"""The README's "Circuit analysis" example runs as written on the real tiny.en, and what it prints
is what the library computes another way."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_circuit_analysis_example_runs(whisper_tiny_en, monkeypatch, tmp_path):
    import hooked_asr

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hooked_asr, "load_model", lambda name: whisper_tiny_en)  # the session's model
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "dla_transcript" in b]
    assert len(blocks) == 1
    ns: dict = {}
    exec(compile(blocks[0], "README.md circuit analysis block", "exec"), ns)
    res, heads, labels, cache = ns["res"], ns["heads"], ns["labels"], ns["cache"]
    assert res.max_abs_error < 1e-4 and ns["grid"].shape == (4, 6) and ns["align"].shape == (4, 6)
    # the per-head stack of the transcript's pass is what the attention output hooks hold, less b_O
    idx = [i for i, lab in enumerate(labels) if lab.startswith("decoder.blocks.3.cross_attn.head.")]
    b_O = whisper_tiny_en.decoder.blocks[3].cross_attn.b_O
    assert torch.allclose(heads[idx].sum(0) + b_O, cache["decoder.blocks.3.hook_cross_attn_out"], atol=1e-4)
    # real weights: the LN scale applied by hand to the decomposition reproduces the final norms' outputs
    for stack in ("decoder", "encoder"):
        ln = whisper_tiny_en.get_submodule(f"{stack}.ln_final")
        by_hand = cache.decompose_resid(apply_ln=True, stack=stack).sum(0) * ln.w + ln.b
        assert torch.allclose(by_hand, cache[f"{stack}.ln_final.hook_normalized"], atol=1e-4)
