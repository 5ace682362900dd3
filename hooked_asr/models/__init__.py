"""The models: :class:`~hooked_asr.models.base.HookedEncoderDecoder` (the API every model has,
and :class:`~hooked_asr.models.base.ModelCapabilities`, what each declares beyond it),
:class:`~hooked_asr.models.whisper.HookedWhisper`, :class:`~hooked_asr.models.qwen2_audio.HookedQwen2Audio`,
the :class:`~hooked_asr.models.activation_cache.ActivationCache` and the decoding core
(:mod:`hooked_asr.models.decoding`). Import the models from ``hooked_asr``; see docs/architecture.md.
"""

__all__: list[str] = []
