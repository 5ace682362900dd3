"""Activation store: pooling against independent computations, resume after a kill,
two-process extraction equal to one process, streaming reads, clear errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hooked_asr.activations import ActivationStore, StoreError, extract_activations, pool
from hooked_asr.audio import audio_frames

sys.path.insert(0, os.path.dirname(__file__))
from _workers import HOOKS, KW, clips, small_whisper  # noqa: E402

ENC = "encoder.blocks.1.hook_resid_post"
DEC = "decoder.blocks.1.hook_resid_post"


def shard_contents(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.glob("shard_*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata())
            out[p.name] = {
                "tensors": {k: f.get_tensor(k) for k in f.keys()},
                "items": meta["items"],
                "range": meta["item_range"],
            }
    return out


def assert_same_shards(a: Path, b: Path) -> None:
    sa, sb = shard_contents(a), shard_contents(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert sa[name]["items"] == sb[name]["items"] and sa[name]["range"] == sb[name]["range"]
        ta, tb = sa[name]["tensors"], sb[name]["tensors"]
        assert sorted(ta) == sorted(tb)
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6, msg=f"{name}:{k}")


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """Uninterrupted single-process extraction of 7 clips (3 shards: 3, 3, 1)."""
    out = tmp_path_factory.mktemp("ref")
    store = extract_activations(model, clips(7), HOOKS, out, dataset_id="clips", **KW)
    return store, out


def test_audio_frames_is_whisper_rule():
    for n in [1, 319, 320, 321, 16000, 24979, 479999, 480000]:
        assert audio_frames(n) == math.ceil(n / 320)
    assert audio_frames(480000, 3000) == 3000 and audio_frames(161, 3000) == 2  # conv1 resolution
    with pytest.raises(ValueError, match="positive"):
        audio_frames(0)


def test_pool_ignores_positions_past_length():
    x = torch.randn(2, 10, 4)
    y = x.clone()
    y[0, 3:] = float("nan")
    y[1, 7:] = 1e9
    for rule in ["mean", "final", "none"]:
        for a, b in zip(pool(x, [3, 7], rule), pool(y, [3, 7], rule)):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(pool(x, [3, 7], "mean")[0][0], x[0, :3].mean(0))


def test_mean_pooling_ignores_padded_frames(model, reference):
    """Pooled row == mean over the first ceil(n/320) frames of an independent run_with_cache."""
    store, _ = reference
    X = store.load(ENC)
    for i, item in enumerate(clips(7)):
        feats = model.prepare_features(item["audio"])
        _, cache = model.run_with_cache(
            input_features=feats["input_features"],
            decoder_input_ids=torch.tensor([[model.cfg.decoder_start_token_id]]),
            names_filter=[ENC],
        )
        n = math.ceil(len(item["audio"]) / 320)
        torch.testing.assert_close(X[i], cache[ENC][0, :n].mean(0), atol=1e-5, rtol=1e-5)
        # The padding differs from the audio: averaging all 1500 frames would give another vector.
        assert (X[i] - cache[ENC][0].mean(0)).abs().max() > 1e-3


def test_decoder_final_is_end_of_text_position(model, reference):
    """Decoder row == the eos position of prompt + transcript + eos run alone (no batch padding)."""
    store, _ = reference
    X = store.load(DEC)
    for i, (item, meta) in enumerate(zip(clips(7), store.items())):
        out = model.transcribe(item["audio"], max_new_tokens=4)
        assert out.tokens == meta["tokens"]
        ids = torch.tensor([out.prompt + out.tokens + [model.cfg.eos_token_id]])
        _, cache = model.run_with_cache(
            input_features=model.prepare_features(item["audio"])["input_features"],
            decoder_input_ids=ids,
            names_filter=[DEC],
        )
        torch.testing.assert_close(X[i], cache[DEC][0, -1], atol=1e-5, rtol=1e-5)


def test_labels_and_metadata_round_trip(reference):
    store, _ = reference
    data = clips(7)
    assert store.labels("label").tolist() == [d["label"] for d in data]
    torch.testing.assert_close(store.labels("gain"), torch.tensor([d["gain"] for d in data], dtype=torch.float64))
    assert [m["id"] for m in store.items()] == [d["id"] for d in data]
    assert store.n_samples().tolist() == [len(d["audio"]) for d in data]
    with pytest.raises(KeyError, match="labels: \\['gain', 'label'\\]"):
        store.labels("speaker")


def test_frames_stream_without_loading_everything(model, tmp_path):
    """pooling='none': every audio frame once, in order, through load / iter_batches / frame_source."""
    data = clips(5)
    store = extract_activations(
        model, data, [ENC], tmp_path, pooling="none", shard_size=2, batch_size=2, dataset_id="clips", progress=False
    )
    X, item, pos = store.load_rows(ENC)
    lengths = [math.ceil(len(d["audio"]) / 320) for d in data]
    assert X.shape[0] == sum(lengths) == store.n_rows(ENC)
    assert item.tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    assert pos.tolist() == [p for n in lengths for p in range(n)]
    batches = list(store.iter_batches(ENC, batch_size=7))
    assert [b.shape[0] for b in batches[:-1]] == [7] * (len(batches) - 1)
    torch.testing.assert_close(torch.cat(batches), X)
    shuffled = torch.cat(list(store.iter_batches(ENC, batch_size=7, shuffle=True, seed=3)))
    assert not torch.equal(shuffled, X)
    torch.testing.assert_close(shuffled[shuffled[:, 0].argsort()], X[X[:, 0].argsort()])
    source = store.frame_source(ENC)
    first = next(iter(source))
    state = source.state_dict()
    rest = list(source)
    torch.testing.assert_close(torch.cat([first] + rest), X)
    source.load_state_dict(state)
    torch.testing.assert_close(torch.cat(list(source)), torch.cat(rest))


def test_resume_after_killed_extraction_gives_same_shards(reference, tmp_path):
    """SIGKILL in the middle of shard 1; the rerun writes only what is missing; shards equal."""
    _, ref_dir = reference
    worker = Path(__file__).with_name("_workers.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp_path), "7", "4"], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("shard_*")) == ["shard_00000.safetensors"]
    with pytest.raises(StoreError, match="incomplete \\(1 of 3 shards\\)"):
        ActivationStore(tmp_path)
    # A writer killed during the rename window leaves only a temporary file, never a final name.
    (tmp_path / ".shard_00001.safetensors.999.tmp").write_bytes(b"half a shard")
    mtime0 = (tmp_path / "shard_00000.safetensors").stat().st_mtime_ns
    torch.set_num_threads(1)
    extract_activations(small_whisper(), clips(7), HOOKS, tmp_path, dataset_id="clips", **KW)
    assert (tmp_path / "shard_00000.safetensors").stat().st_mtime_ns == mtime0  # not recomputed
    assert not list(tmp_path.glob(".*.tmp"))
    assert_same_shards(tmp_path, ref_dir)
    assert ActivationStore(tmp_path).manifest["complete"]


def test_two_process_extraction_equals_single_process(reference, tmp_path):
    import torch.multiprocessing as mp

    from _workers import rank_main

    _, ref_dir = reference
    out = tmp_path / "store"
    mp.spawn(rank_main, args=(2, str(tmp_path / "init"), str(out), 7), nprocs=2, join=True)
    assert_same_shards(out, ref_dir)
    store = ActivationStore(out)
    assert store.manifest["complete"] and store.n_items == 7
    torch.testing.assert_close(store.load(ENC), ActivationStore(ref_dir).load(ENC), rtol=0, atol=1e-6)


def test_clear_errors(model, reference, tmp_path):
    _, ref_dir = reference
    with pytest.raises(StoreError, match="other settings"):
        extract_activations(model, clips(7), HOOKS, ref_dir, dataset_id="clips", **{**KW, "shard_size": 4})
    with pytest.raises(KeyError, match="the encoder has 2 blocks"):
        extract_activations(model, clips(2), ["encoder.blocks.5.hook_resid_post"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="'final' is for decoder hooks"):
        extract_activations(model, clips(2), [ENC], tmp_path, pooling="final", progress=False)
    with pytest.raises(ValueError, match="not laid out"):
        extract_activations(model, clips(2), ["encoder.blocks.0.attn.hook_pattern"], tmp_path / "p", progress=False)
    with pytest.raises(StoreError, match="no activation store"):
        ActivationStore(tmp_path / "nothing")
    with pytest.raises(KeyError, match="not in the store"):
        ActivationStore(ref_dir).load("encoder.blocks.0.hook_resid_post")
