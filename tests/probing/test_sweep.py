"""Layer sweeps (hooked_asr/probing/sweep.py, driver.py): over mappings, tables and files, over a
real activation store (equal to fit_probe on the same split), and probe_model resuming the store."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from hooked_asr.probing import ProbeSweep, fit_probe, probe_layers, probe_model
from tests.probing.conftest import planted


# ---- sweeps ----------------------------------------------------------------------------------


def test_sweep_over_mapping_tables_and_files(tmp_path):
    X, y, _ = planted(n=300, d=10, seed=8, margin=0.1)
    g = torch.Generator().manual_seed(0)
    layers = {0: torch.randn(len(y), 10, generator=g), 1: X + torch.randn(X.shape, generator=g) * 2, 2: X}
    sweep = probe_layers(layers, y, title="planted")
    assert isinstance(sweep, ProbeSweep) and [r["layer"] for r in sweep.rows] == [0, 1, 2]
    assert sweep.best_layer == 2
    accs = [r["test_acc"] for r in sweep.rows]
    assert accs[0] < 0.75 < accs[2]
    # every layer used the same split
    assert all((sweep.results[k].test_idx == sweep.results[0].test_idx).all() for k in layers)
    table = sweep.summary()
    assert "planted" in table and "test_acc" in table and table.count("\n") >= 4
    sweep.to_csv(tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [float(r["test_acc"]) for r in rows] == pytest.approx(accs)
    data = sweep.to_json(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["best_layer"] == 2 == data["best_layer"]
    assert sum(map(sum, data["details"]["2"]["confusion"])) == sweep.results[2].n_test
    sweep.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def whisper_store(tmp_path_factory):
    from hooked_asr.activations import extract_activations
    from tests.activations._workers import clips, small_whisper

    model = small_whisper()
    data = clips(10)
    hooks = ["encoder.blocks.0.hook_resid_post", "encoder.blocks.1.hook_resid_post", "decoder.blocks.1.hook_resid_post"]
    out = tmp_path_factory.mktemp("store")
    store = extract_activations(
        model, data, hooks, out, shard_size=4, batch_size=4, max_new_tokens=3, progress=False, dataset_id="clips10"
    )
    return model, data, hooks, store, out


def test_sweep_over_activation_store(whisper_store, tmp_path):
    model, data, hooks, store, out = whisper_store
    sweep = probe_layers(store, test_size=0.2)
    assert [r["hook"] for r in sweep.rows] == hooks
    assert [(r["stack"], r["layer"]) for r in sweep.rows] == [("encoder", 0), ("encoder", 1), ("decoder", 1)]
    y = store.labels("label")
    assert (y.numpy() == np.array([d["label"] for d in data])).all()
    for h in hooks:
        ref = fit_probe(store.load(h), y, split=(sweep.results[h].train_idx, sweep.results[h].test_idx))
        assert sweep.results[h].test_acc == ref.test_acc
        assert torch.equal(sweep.results[h].probe.predict_proba(store.load(h)), ref.probe.predict_proba(store.load(h)))
    # the tone's pitch (the label) is linearly readable from the encoder's mean-pooled residual
    enc = sweep.results[hooks[1]]
    assert enc.train_acc == 1.0 and enc.test_acc == 1.0
    # float labels -> regression
    reg = probe_layers(store, label_key="gain", hooks=hooks[:1])
    assert reg.task == "regression" and not math.isnan(reg.rows[0]["train_r2"])
    # probe_model on the same directory resumes the store and gives the same sweep
    again = probe_model(
        model,
        data,
        hooks=hooks,
        out_dir=out,
        shard_size=4,
        batch_size=4,
        max_new_tokens=3,
        dataset_id="clips10",
        progress=False,
    )
    assert [r["test_acc"] for r in again.rows] == [r["test_acc"] for r in sweep.rows]
    assert "encoder.blocks.1.hook_resid_post" in again.summary()


def test_probe_layers_explicit_split_is_used_for_every_layer():
    """``split=`` (e.g. held-out words) replaces the random split: every layer trains and
    tests on exactly those rows."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * 10)
    layers = {l: torch.randn(20, 5, generator=g) + 3 * y[:, None].float() for l in range(2)}
    tr, te = list(range(0, 14)), list(range(14, 20))
    sweep = probe_layers(layers, y, split=(tr, te))
    for res in sweep.results.values():
        assert sorted(res.train_idx.tolist()) == tr and sorted(res.test_idx.tolist()) == te
    assert all(r["n_train"] == 14 and r["n_test"] == 6 for r in sweep.rows)
