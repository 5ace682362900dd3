"""Tuned lens (hooked_asr/lens/tuned.py): it starts as the logit lens, training lowers its KL,
and it survives a save/load round trip."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.lens import (
    apply_logit_lens,
    TunedLens,
    collect_decoder_residuals,
    compare_lenses,
    evaluate_kl,
    train_tuned_lens,
)
from tests.lens.conftest import features


def test_tuned_lens_starts_as_logit_lens_and_training_lowers_kl(pair, tmp_path):
    hf, model = pair
    feats = [features(hf, 10 + i) for i in range(4)]
    resid = collect_decoder_residuals(model, feats, max_new_tokens=8, progress=False)
    lens = TunedLens.for_model(model)
    with torch.no_grad():
        torch.testing.assert_close(lens.logits(model, resid), apply_logit_lens(model, resid), atol=1e-5, rtol=1e-5)
    before = evaluate_kl(model, None, resid)
    assert before[-1].abs() < 1e-5 and before[0] > 0
    params_before = [p.clone() for p in model.parameters()]
    lens, hist = train_tuned_lens(
        model, resid, lens, steps=30, batch_size=16, lr=3e-3, val_fraction=0.0, progress=False
    )
    after = evaluate_kl(model, lens, resid)
    assert torch.all(after[:-1] < 0.5 * before[:-1]), (before, after)
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(params_before, model.parameters()))
    torch.testing.assert_close(lens.weight[-1], torch.eye(lens.d_model))  # the last layer stays exact
    cmp = compare_lenses(model, lens, resid)
    assert cmp["agreement_logit_lens"][-1] == 1.0 == cmp["agreement_tuned_lens"][-1]
    assert cmp["kl_tuned_lens"][0] == pytest.approx(float(after[0]), rel=1e-4)
    lens.save(tmp_path / "lens", extra={"steps": 30})
    loaded = TunedLens.load(tmp_path / "lens.safetensors")
    assert torch.equal(loaded.weight, lens.weight.detach()) and loaded.meta["steps"] == 30
    with pytest.raises(ValueError, match="decoder layers"):
        TunedLens(2, 8).check_model(model)
