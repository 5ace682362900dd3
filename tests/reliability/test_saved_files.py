"""Saved SAEs, probes, tuned lenses and activation stores (issue 28, items 5 and 9): NaN/inf
weights are refused on load with a message naming the file and the tensor; sizes read from
JSON are checked against the tensors' shapes before anything of that size is allocated; a
sparse file declaring gigabytes is refused; saves are atomic (a failed write keeps the old file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooked_asr.files import FileCheckError, read_checked_safetensors
from hooked_asr.lens.tuned import TunedLens
from hooked_asr.probing.probe import LinearProbe, train_probe
from hooked_asr.sae.model import SAEConfig, SparseAutoencoder, load_sae, save_sae


def _sae(tmp_path: Path) -> Path:
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, k=4, hook_name="encoder.blocks.1.hook_resid_post"))
    return save_sae(sae, tmp_path / "sae")


def _probe(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 6, generator=g)
    y = (X[:, 0] > 0).long()
    return train_probe(X, y, l2=1e-2).save(tmp_path / "probe")


def _lens(tmp_path: Path) -> Path:
    lens = TunedLens(2, 8, model_name="m")
    lens.save(tmp_path / "lens")
    return tmp_path / "lens.safetensors"


def _poison(st: Path, name: str) -> None:
    t = load_file(str(st))
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as f:
        meta = f.metadata()
    t[name] = t[name].clone()
    t[name].view(-1)[0] = float("nan")
    save_file(t, str(st), metadata=meta)


LOADERS = {
    "sae": (_sae, lambda p: load_sae(p), lambda p: p / "sae_weights.safetensors", "W_dec"),
    "probe": (_probe, lambda p: LinearProbe.load(p), lambda p: p, "linear.weight"),
    "lens": (_lens, lambda p: TunedLens.load(p), lambda p: p, "weight"),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_nan_weights_are_refused_naming_file_and_tensor(tmp_path, kind):
    make, load, weights, tensor = LOADERS[kind]
    p = make(tmp_path)
    load(p)  # the clean file loads
    _poison(weights(p), tensor)
    with pytest.raises(FileCheckError, match=rf"{tensor}.*NaN/inf") as e:
        load(p)
    assert str(weights(p)) in str(e.value)


def _forbid(monkeypatch, cls) -> None:
    """Building ``cls`` (which allocates the config's sizes) fails the test."""

    def boom(self, *a, **k):
        raise AssertionError(f"{cls.__name__} was built before its sizes were checked")

    monkeypatch.setattr(cls, "__init__", boom)


def test_sae_config_size_contradicting_the_tensors_is_refused_before_allocating(tmp_path, monkeypatch):
    p = _sae(tmp_path)
    cfg = json.loads((p / "cfg.json").read_text())
    cfg["d_sae"] = cfg["hooked_asr"]["d_sae"] = 4_000_000  # 6 GB at d_in 384, were it allocated
    (p / "cfg.json").write_text(json.dumps(cfg))
    _forbid(monkeypatch, SparseAutoencoder)
    with pytest.raises(FileCheckError, match=r"'W_enc' has shape \[8, 16\].*\[8, 4000000\]"):
        load_sae(p)


def test_probe_config_size_contradicting_the_tensors_is_refused_before_allocating(tmp_path, monkeypatch):
    st = _probe(tmp_path)
    t = load_file(str(st))
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as f:
        cfg = json.loads(f.metadata()["config"])
    cfg["d_in"] = 1_000_000_000
    save_file(t, str(st), metadata={"config": json.dumps(cfg)})
    _forbid(monkeypatch, LinearProbe)
    with pytest.raises(FileCheckError, match=r"'linear.weight' has shape \[1, 6\].*1000000000"):
        LinearProbe.load(st)


def test_tuned_lens_json_size_contradicting_the_tensors_is_refused_before_allocating(tmp_path, monkeypatch):
    st = _lens(tmp_path)
    js = st.with_suffix(".json")
    meta = json.loads(js.read_text())
    meta["d_model"] = 30000  # 14.4 GB of identity matrices at 4 layers, were it allocated
    js.write_text(json.dumps(meta))
    _forbid(monkeypatch, TunedLens)
    with pytest.raises(FileCheckError, match=r"'weight' has shape \[2, 8, 8\].*\[2, 30000, 30000\]"):
        TunedLens.load(st)


def test_sparse_file_declaring_gigabytes_is_refused(tmp_path):
    """A few KB on disk whose header declares a 2 GB tensor (a sparse file) reads as 2 GB of zeros."""
    header = json.dumps({"W": {"dtype": "F32", "shape": [1 << 19, 1 << 10], "data_offsets": [0, 1 << 31]}}).encode()
    header += b" " * (-len(header) % 8)
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + (1 << 31))
    if os.stat(p).st_blocks * 512 > 1 << 24:
        pytest.skip("this filesystem does not keep sparse files sparse")
    with pytest.raises(FileCheckError, match="sparse"):
        read_checked_safetensors(p, {"W": (1 << 19, 1 << 10)}, "test")


def test_store_manifest_rows_contradicting_the_shard_are_refused(audio_whisper, tmp_path):
    import numpy as np

    from hooked_asr.activations import ActivationStore, StoreError, extract_activations

    hook = "encoder.blocks.1.hook_resid_post"
    clips = [
        {"audio": (0.3 * np.sin(np.arange(3200) / (5 + i))).astype(np.float32), "id": f"c{i}", "label": i % 2}
        for i in range(2)
    ]
    extract_activations(audio_whisper, clips, [hook], tmp_path / "s", shard_size=2, batch_size=2, progress=False)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["shards"][0]["rows"][hook] = 10**9
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        StoreError, match=r"act/encoder.blocks.1.hook_resid_post has shape \[2, \d+\], the manifest says 1000000000"
    ):
        ActivationStore(tmp_path / "s").load(hook)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_failed_save_keeps_the_previous_file(tmp_path, kind, monkeypatch):
    """A full disk in the middle of a save: the earlier file stays whole and loadable."""
    make, load, weights, _ = LOADERS[kind]
    p = make(tmp_path)
    before = weights(p).read_bytes()

    import hooked_asr.files as files

    real = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        make(tmp_path)
    monkeypatch.setattr(files.os, "fsync", real)
    assert weights(p).read_bytes() == before
    load(p)
    assert not [f for f in weights(p).parent.iterdir() if f.name.endswith(".tmp")]
