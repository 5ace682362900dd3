"""hooked_asr: mechanistic interpretability for speech recognition models.

    import hooked_asr
    model = hooked_asr.load_model("whisper-tiny.en")
    out = model.transcribe("speech.wav")
    logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens)

The names below are imported on first use (PEP 562 ``__getattr__``), so ``import hooked_asr``
and ``hooked-asr --help`` do not pay for torch, transformers and transformer_lens until a name
that needs them is touched; ``hooked_asr.lens`` and the other subpackages load the same way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "load_audio": "hooked_asr.audio",
    "log_mel_spectrogram": "hooked_asr.audio",
    "DecoderConfig": "hooked_asr.config",
    "EncoderConfig": "hooked_asr.config",
    "ModelConfig": "hooked_asr.config",
    "HookPoint": "hooked_asr.hooks",
    "act_name": "hooked_asr.hooks",
    "ActivationCache": "hooked_asr.models.activation_cache",
    "TranscriptionResult": "hooked_asr.models.decoding",
    "HookedWhisper": "hooked_asr.models.whisper",
    "HookedQwen2Audio": "hooked_asr.models.qwen2_audio",
    "list_models": "hooked_asr.loading.registry",
    "load_model": "hooked_asr.loading.registry",
}

# The registry builds Whisper checkpoints with this class; named as a string so that loading it
# waits for the first load_model (loading/ never imports models/, see loading/registry.py).
from hooked_asr.loading._classes import register_model_class  # noqa: E402  (no torch import)

register_model_class("whisper", "hooked_asr.models.whisper:HookedWhisper")
register_model_class("qwen2_audio", "hooked_asr.models.qwen2_audio:HookedQwen2Audio")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")  # hooked_asr.lens, hooked_asr.explore, ...
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'hooked_asr' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from hooked_asr.audio import load_audio, log_mel_spectrogram
    from hooked_asr.config import DecoderConfig, EncoderConfig, ModelConfig
    from hooked_asr.hooks import HookPoint, act_name
    from hooked_asr.loading.registry import list_models, load_model
    from hooked_asr.models.activation_cache import ActivationCache
    from hooked_asr.models.decoding import TranscriptionResult
    from hooked_asr.models.qwen2_audio import HookedQwen2Audio
    from hooked_asr.models.whisper import HookedWhisper

__all__ = [
    "ActivationCache",
    "HookedWhisper",
    "load_model",
    "list_models",
    "HookedQwen2Audio",
    "HookPoint",
    "act_name",
    "load_audio",
    "log_mel_spectrogram",
    "ModelConfig",
    "EncoderConfig",
    "DecoderConfig",
    "TranscriptionResult",
]
