"""hooked_asr: mechanistic interpretability for speech recognition models.

    import hooked_asr
    model = hooked_asr.load_model("whisper-tiny.en")
    out = model.transcribe("speech.wav")
    logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens)
"""

from hooked_asr.audio import load_audio, log_mel_spectrogram
from hooked_asr.config import DecoderConfig, EncoderConfig, ModelConfig
from hooked_asr.hooks import HookPoint, act_name
from hooked_asr.models.activation_cache import ActivationCache
from hooked_asr.models.base import TranscriptionResult
from hooked_asr.models.whisper import HookedWhisper
from hooked_asr.loading.registry import list_models, load_model
from hooked_asr.models.qwen2_audio import HookedQwen2Audio
from hooked_asr.loading.registry import register_model_class

register_model_class("whisper", HookedWhisper)
register_model_class("qwen2_audio", HookedQwen2Audio)

__version__ = "0.1.0"

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
