"""The benchmarks' one way to get a model and speech: the real checkpoint and espeak-ng when
they load, else a random model of the same shape and noise (timings depend on the shape only).

Run as scripts, the benchmarks import this by its bare name (``from _models import ...``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Time the checkout this file sits in, not whatever an editable install points at (another worktree).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

# Hugging Face ``WhisperConfig`` fields of the real sizes (the random fallbacks and the GPU shapes).
WHISPER_SHAPES = {
    "tiny": dict(
        vocab_size=51864,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
    ),
    "base": dict(
        vocab_size=51865,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
    ),
    "large-v3": dict(
        vocab_size=51866,
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=32,
        decoder_layers=32,
        encoder_attention_heads=20,
        decoder_attention_heads=20,
        encoder_ffn_dim=5120,
        decoder_ffn_dim=5120,
    ),
}
SHAPE_OF = {"whisper-tiny.en": "tiny", "whisper-tiny": "tiny", "whisper-base": "base", "whisper-large-v3": "large-v3"}
SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "The quick brown fox jumps over the lazy dog.",
    "We will meet at the station at half past nine tomorrow morning.",
    "She sells sea shells by the sea shore.",
    "A cup of hot tea is the best way to start a cold day.",
    "The museum opens at ten and closes at six on weekdays.",
    "He forgot his umbrella on the train again.",
    "Turn left after the bridge and follow the river to the old mill.",
]


def random_hf_whisper(shape: str, attn: str = "sdpa", seed: int = 0):
    """A random ``WhisperForConditionalGeneration`` at one of :data:`WHISPER_SHAPES`."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(**WHISPER_SHAPES[shape], attn_implementation=attn)
    return WhisperForConditionalGeneration(cfg).eval()


def random_whisper(shape: str, seed: int = 0):
    """A random ``HookedWhisper`` at one of :data:`WHISPER_SHAPES`."""
    from hooked_asr import HookedWhisper

    return HookedWhisper.from_hf(random_hf_whisper(shape, "eager", seed))


def load_model_or_random(name: str, device: str = "cpu"):
    """``(model, description)``: ``hooked_asr.load_model(name)``, or a random model of its shape
    (saying why) when the checkpoint cannot be loaded."""
    try:
        import hooked_asr

        return hooked_asr.load_model(name).to(device), name
    except Exception as err:  # noqa: BLE001 - any missing piece (weights, loader) falls back
        shape = SHAPE_OF.get(name, "tiny")
        print(f"[{name} unavailable ({type(err).__name__}: {str(err)[:120]}); using a random {shape}-shaped model]")
        return random_whisper(shape).to(device), f"random {shape}-shaped"


def long_speech(seconds: float, sentences: list[str] | None = None) -> np.ndarray:
    """``seconds`` of espeak-ng speech: ``sentences`` (default :data:`SENTENCES`) in turn, 0.6 s of
    silence after each, cut to length."""
    from hooked_asr.datasets.espeak import synthesize

    clips = [synthesize(s, voice="en-us") for s in (sentences or SENTENCES)]
    pause = np.zeros(int(0.6 * 16000), dtype=np.float32)
    parts, n, i = [], 0, 0
    while n < seconds * 16000:
        parts += [clips[i % len(clips)], pause]
        n += len(clips[i % len(clips)]) + len(pause)
        i += 1
    return np.concatenate(parts)[: int(seconds * 16000)]


def speech_or_noise(n: int, seconds: float = 4.0) -> tuple[list[np.ndarray], str]:
    """``n`` clips of espeak-ng speech (cycling through :data:`SENTENCES`), or noise if espeak-ng
    is missing."""
    try:
        from hooked_asr.datasets.espeak import synthesize

        return [synthesize(SENTENCES[i % len(SENTENCES)], voice="en-us") for i in range(n)], "espeak-ng speech"
    except Exception as err:  # noqa: BLE001
        print(f"[espeak-ng unavailable ({type(err).__name__}: {str(err)[:120]}); using noise]")
        rng = np.random.default_rng(0)
        return [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(n)], "noise"


def model_and_speech(name: str, n: int, device: str = "cpu"):
    """``(model, clips, description)``; a random model always gets noise (it cannot read speech)."""
    model, what = load_model_or_random(name, device)
    clips, kind = speech_or_noise(n)
    if what.startswith("random") and kind != "noise":
        rng = np.random.default_rng(0)
        clips, kind = [(0.1 * rng.standard_normal(c.size)).astype(np.float32) for c in clips], "noise"
    return model, clips, f"{what}, {kind}"
