"""Sweeps (hooked_asr/patching/sweeps.py): batched equals one at a time and a hand-made patch,
resume from the results file, layer-by-head heatmaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooked_asr.patching import (
    SweepItem,
    components,
    continuation_logprob,
    interpolate,
    patch,
    record_reference,
    run_with_interventions,
    sweep,
    zero_ablate,
)


def _items(model, n=2):
    g = torch.Generator().manual_seed(3)
    shape = (1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    return [SweepItem(f"item{k}", torch.randn(shape, generator=g), reference=torch.randn(shape, generator=g)) for k in range(n)]


def test_batched_sweep_equals_one_at_a_time_and_single_patches(model):
    items = _items(model)
    comps = components(model, layers=[1])
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False)
    batched = sweep(model, items, comps, "interpolate", 0.8, batch_size=7, **kw)
    single = sweep(model, items, comps, "interpolate", 0.8, batch_size=1, **kw)
    assert len(batched.table) == len(comps) * len(items)
    np.testing.assert_allclose(batched.table["value"], single.table["value"], atol=1e-4)
    # one row checked against a hand-made patch of that component alone
    it, c = items[1], comps[5]
    gen = model.generate(it.audio, model.teacher_forced_inputs(it.audio).tokens[0], max_new_tokens=6)
    toks = gen.tokens[0].tolist()
    toks = toks[: toks.index(model.cfg.eos_token_id)] if model.cfg.eos_token_id in toks else toks
    t = model.teacher_forced_inputs(it.audio, toks)
    ref = record_reference(model, model.teacher_forced_inputs(it.reference, toks).kwargs, [c])
    want = continuation_logprob(run_with_interventions(model, [interpolate(c, ref, 0.8)], **t.kwargs), t.tokens, t.prompt_len)
    got = batched.table.query("component == @c.name and item == @it.id")["value"].item()
    assert got == pytest.approx(float(want.detach()), abs=1e-4)


def test_generation_sweep_batched_matches_single(model):
    items = _items(model, 1)
    comps = components(model, heads=False)
    kw = dict(metrics=["changed", "n_tokens"], missing="keep", max_new_tokens=8, progress=False)
    a = sweep(model, items, comps, "interpolate", 1.0, batch_size=len(comps), **kw)
    b = sweep(model, items, comps, "interpolate", 1.0, batch_size=1, **kw)
    assert a.table["value"].tolist() == b.table["value"].tolist()
    assert a.n_batched_runs == 1 and b.n_batched_runs == len(comps)


def test_sweep_resumes_from_its_results_file(model, tmp_path):
    items = _items(model)
    comps = components(model, heads=False)
    path = tmp_path / "sweep.jsonl"
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=6, progress=False, results_path=path)
    sweep(model, items, comps[:3], "zero", **kw)
    calls = []

    def counting(comp, rows, cache):
        calls.append(comp.name)
        return zero_ablate(comp, rows=rows)
    counting.__name__ = "zero"  # same config as the first run
    full = sweep(model, items, comps, counting, **kw)
    assert sorted(set(calls)) == sorted(c.name for c in comps[3:])
    fresh = sweep(model, items, comps, "zero", **{**kw, "results_path": None})
    merged = full.table.sort_values(["item", "component"])["value"].to_numpy()
    np.testing.assert_allclose(merged, fresh.table.sort_values(["item", "component"])["value"].to_numpy(), atol=1e-5)
    assert json.loads(path.read_text().splitlines()[0])["config"]["intervention"] == "zero"
    with pytest.raises(ValueError, match="different sweep"):
        sweep(model, items, comps, "zero", alpha=0.5, **kw)


def test_heatmap_is_layer_by_head(model):
    items = _items(model, 1)
    comps = components(model, kinds=["cross_attn"])
    res = sweep(model, items, comps, "zero", mode="teacher_forced", metrics=["logprob"], max_new_tokens=5, progress=False)
    grid, layers = res.heatmap("logprob", "decoder", "cross_attn")
    assert grid.shape == (2, 4) and layers == [0, 1]
    row = res.table.query("component == 'decoder.blocks.1.cross_attn.head.3'")["value"].item()
    assert grid[1, 3] == row
