"""Small hooked modules that models are built from."""

from hooked_asr.components.attention import Attention, RotaryEmbedding
from hooked_asr.components.audio_encoder import AudioEncoder
from hooked_asr.components.blocks import Block
from hooked_asr.components.decoder import TextDecoder
from hooked_asr.components.mlp import MLP, GatedMLP
from hooked_asr.components.norm import LayerNorm, RMSNorm
from hooked_asr.components.projector import AudioProjector

__all__ = [
    "Attention",
    "RotaryEmbedding",
    "AudioEncoder",
    "Block",
    "TextDecoder",
    "MLP",
    "GatedMLP",
    "LayerNorm",
    "RMSNorm",
    "AudioProjector",
]
