"""Errors that used to surface raw from deep inside now name the cause and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch


def test_hook_returning_another_dtype_names_the_hook(tiny_hooked_whisper):
    from hooked_asr.hooks import HookDtypeError

    model = tiny_hooked_whisper
    feats = torch.randn(1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    tokens = torch.tensor([[model.cfg.decoder_start_token_id, 5]])
    name = "encoder.blocks.0.hook_resid_post"
    with pytest.raises(HookDtypeError, match=rf"'{name}'.*float64.*float32"):
        model.run_with_hooks(
            input_features=feats, decoder_input_ids=tokens, fwd_hooks=[(name, lambda x, hook: x.double())]
        )
    # Hooks are removed after the error: the model still runs.
    model(input_features=feats, decoder_input_ids=tokens)


def test_sae_whose_d_in_differs_from_the_hook_width(tiny_hooked_whisper):
    from hooked_asr.sae import SAEConfig, SparseAutoencoder
    from hooked_asr.sae.steering import splice

    model = tiny_hooked_whisper
    name = "encoder.blocks.0.hook_resid_post"
    sae = SparseAutoencoder(
        SAEConfig(d_in=model.cfg.encoder.d_model + 3, d_sae=8, architecture="relu", hook_name=name), seed=0
    )
    feats = torch.randn(1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    with pytest.raises(ValueError, match=rf"d_in={model.cfg.encoder.d_model + 3}.*width {model.cfg.encoder.d_model}"):
        with splice(model, sae):
            model.encode(feats)


def test_load_sae_json_and_safetensors_errors_name_the_file(tmp_path):
    from hooked_asr.sae import SAEConfig, SparseAutoencoder, load_sae, save_sae

    save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, architecture="relu"), seed=0), tmp_path / "a")
    (tmp_path / "a" / "cfg.json").write_text("{nope")
    with pytest.raises(ValueError, match="cfg.json"):
        load_sae(tmp_path / "a")
    save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, architecture="relu"), seed=0), tmp_path / "b")
    weights = next(p for p in (tmp_path / "b").iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=weights.name):
        load_sae(tmp_path / "b")


def test_store_shard_that_is_not_safetensors_names_the_file(tmp_path):
    from hooked_asr.activations.store import ActivationStore, StoreError

    manifest = {
        "format": "hooked_asr.activations/1",
        "spec": {"hooks": {"h": "mean"}},
        "spec_hash": "x",
        "n_items": 1,
        "shard_size": 1,
        "n_shards": 1,
        "complete": True,
        "shards": [{"index": 0, "file": "shard_00000.safetensors", "items": [0, 1], "rows": {"h": 1}}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "shard_00000.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="shard_00000.safetensors"):
        ActivationStore(tmp_path).load("h")


def test_cli_bad_audio_file_prints_one_line_not_a_traceback(tmp_path, capsys, whisper_tiny_en):
    from hooked_asr.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    code = main(["transcribe", str(bad)])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "bad.wav" in err and "cannot read" in err


def test_cli_silent_file_says_what_to_do(tmp_path, capsys, whisper_tiny_en):
    from hooked_asr.cli import main

    f = tmp_path / "quiet.wav"
    sf.write(f, np.zeros(8000, np.float32), 16000)
    code = main(["transcribe", str(f)])
    err = capsys.readouterr().err
    assert code != 0 and "silent" in err and len(err.strip().splitlines()) == 1, err
