"""The activation store never returns another dataset's rows: manifest names stay inside the
store, duplicate / missing / swapped / copied shards are refused, the spec identifies the data
(content hash of audio and labels), and concurrent writers keep each other's temporary files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hooked_asr.activations import ActivationStore, StoreError, extract_activations

ENC = "encoder.blocks.1.hook_resid_post"


def _clips(n: int, seed: int = 0, label_offset: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(1600, 6400))
        t = np.arange(length) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(length)
        out.append({"audio": audio.astype(np.float32), "label": (i + label_offset) % 2, "id": f"c{i}"})
    return out


KW = dict(shard_size=2, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def built(audio_whisper, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    extract_activations(audio_whisper, _clips(6), [ENC], root, **KW)
    return root


@pytest.fixture
def store_dir(built, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(built, d)
    return d


def _edit_manifest(d: Path, edit) -> None:
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_manifest_file_outside_the_store_is_refused(store_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # A real shard, outside the store, with other numbers: reading it would be a silent wrong answer.
    shutil.copy(store_dir / "shard_00001.safetensors", outside / "shard_00000.safetensors")
    _edit_manifest(store_dir, lambda m: m["shards"][0].update(file="../elsewhere/shard_00000.safetensors"))
    with pytest.raises(StoreError, match="elsewhere"):
        ActivationStore(store_dir).load(ENC)
    _edit_manifest(store_dir, lambda m: m["shards"][0].update(file="../../../../etc/passwd"))
    with pytest.raises(StoreError, match="passwd"):
        ActivationStore(store_dir).load(ENC)


def test_duplicate_manifest_entries_are_refused(store_dir):
    _edit_manifest(store_dir, lambda m: m["shards"].insert(1, dict(m["shards"][0])))
    with pytest.raises(StoreError, match="twice|duplicate"):
        ActivationStore(store_dir).load(ENC)


def test_missing_manifest_entry_of_a_complete_store_is_refused(store_dir):
    _edit_manifest(store_dir, lambda m: m["shards"].pop(1))
    with pytest.raises(StoreError, match="missing|lacks"):
        ActivationStore(store_dir).load(ENC)


def test_unreadable_manifest_names_the_file(store_dir):
    (store_dir / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json"):
        ActivationStore(store_dir)


@pytest.mark.parametrize("damage", ["swap", "copy"])
def test_swapped_or_copied_shard_is_refused(store_dir, damage):
    a, b = store_dir / "shard_00000.safetensors", store_dir / "shard_00001.safetensors"
    if damage == "swap":
        tmp = store_dir / "x"
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    else:
        shutil.copy(a, b)
    with pytest.raises(StoreError, match="shard_0000"):
        ActivationStore(store_dir).load(ENC)


def test_another_dataset_of_the_same_length_is_refused_not_served(audio_whisper, tmp_path):
    """The old spec recorded only the length: the second call returned the first dataset's rows."""
    extract_activations(audio_whisper, _clips(4, seed=0), [ENC], tmp_path, **KW)
    with pytest.raises(StoreError, match="(?i)different data|content"):
        extract_activations(audio_whisper, _clips(4, seed=1), [ENC], tmp_path, **KW)
    # Same audio, other labels: also another dataset.
    with pytest.raises(StoreError, match="(?i)different data|content"):
        extract_activations(audio_whisper, _clips(4, seed=0, label_offset=1), [ENC], tmp_path, **KW)
    # The same data again resumes (nothing to redo) and returns the same rows.
    again = extract_activations(audio_whisper, _clips(4, seed=0), [ENC], tmp_path, **KW)
    assert again.labels().tolist() == [d["label"] for d in _clips(4, seed=0)]


def test_probe_model_out_dir_inherits_the_identity_check(audio_whisper, tmp_path):
    from hooked_asr.probing import probe_model

    kw = dict(hooks=[ENC], out_dir=tmp_path, shard_size=2, batch_size=2, progress=False)
    probe_model(audio_whisper, _clips(6, seed=0), **kw)
    with pytest.raises(StoreError, match="(?i)different data|content"):
        probe_model(audio_whisper, _clips(6, seed=2), **kw)


def test_extraction_keeps_a_live_writers_temp_file_and_removes_a_dead_ones(audio_whisper, tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        tmp_path.mkdir(exist_ok=True)
        live_tmp = tmp_path / f".shard_00001.safetensors.{live.pid}.tmp"
        dead_tmp = tmp_path / f".shard_00002.safetensors.{dead.pid}.tmp"
        live_tmp.write_bytes(b"half a shard")
        dead_tmp.write_bytes(b"half a shard")
        extract_activations(audio_whisper, _clips(4), [ENC], tmp_path, **KW)
        assert live_tmp.exists(), "deleted the temporary file of a writer that is still running"
        assert not dead_tmp.exists()
    finally:
        live.kill()
        live.wait()
