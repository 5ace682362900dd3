"""The one decoding core every hooked model uses (see docs/decoding.md).

``search`` (greedy, sampling, beam search), ``timestamps`` (Whisper's timestamp rules and
segments), ``fallback`` (temperature fallback), ``longform`` (sequential 30-s windows),
``timing`` (word timings from cross-attention), ``prefix`` (sweeps sharing a clean run's prefix), ``results`` and ``state`` (what hooks can read).
"""

from hooked_asr.models.decoding.fallback import compression_ratio
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.prefix import PrefixCache, generate_from_prefix, generate_recording_prefix
from hooked_asr.models.decoding.results import GenerationOutput, Segment, TranscriptionResult, WordTiming
from hooked_asr.models.decoding.state import DecodingState
from hooked_asr.models.decoding.timing import alignment_heads, alignment_matrix, dtw, find_alignment, median_filter

__all__ = [
    "DecodingState",
    "GenerationOutput",
    "PrefixCache",
    "Segment",
    "TranscribeOptions",
    "TranscriptionResult",
    "WordTiming",
    "alignment_heads",
    "alignment_matrix",
    "compression_ratio",
    "dtw",
    "find_alignment",
    "generate_from_prefix",
    "generate_recording_prefix",
    "median_filter",
]
