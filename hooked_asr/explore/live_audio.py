"""The live explorer's audio: the window a page shows and the files users upload
(:mod:`hooked_asr.explore.live`)."""

from __future__ import annotations

import io
import math

import numpy as np
from jaxtyping import Float


class LiveError(ValueError):
    """A request the live explorer refuses (bad intervention, bad window, unknown action)."""


# ---- the audio window --------------------------------------------------------------------------
def pick_window(
    wave: Float[np.ndarray, "samples"], start: float = 0.0, window: float | None = None, max_seconds: float = 30.0
) -> Float[np.ndarray, "window_samples"]:
    """``wave[start : start + window]`` (seconds, 16 kHz), at most ``max_seconds`` long (the model's
    window). ``window=None``: up to ``max_seconds``; audio longer than that with no window chosen is refused
    with the choice to make, so a long file is never cut silently."""
    from hooked_asr.audio import SAMPLE_RATE

    total = len(wave) / SAMPLE_RATE
    if not (isinstance(start, (int, float)) and math.isfinite(start) and 0 <= start < max(total, 1e-9)):
        raise LiveError(f"start={start!r} s is outside the audio (0 to {total:.2f} s): pick --start in that range")
    if window is None:
        if total - start > max_seconds + 1e-6 and start == 0:
            raise LiveError(
                f"the audio lasts {total:.2f} s and the model reads {max_seconds:g} s at a time: choose a "
                f"window with --start S (and --window W <= {max_seconds:g}), e.g. --start 0 --window {max_seconds:g}"
            )
        window = min(max_seconds, total - start)
    if not (isinstance(window, (int, float)) and math.isfinite(window) and 0 < window <= max_seconds + 1e-6):
        raise LiveError(f"window={window!r} s: give 0 < window <= {max_seconds:g} s (the model's window)")
    a, b = int(round(start * SAMPLE_RATE)), int(round(min(total, start + window) * SAMPLE_RATE))
    return np.ascontiguousarray(wave[a:b], dtype=np.float32)


def decode_wav_bytes(data: bytes) -> Float[np.ndarray, "samples"]:
    """An uploaded file (anything soundfile reads: WAV, FLAC, OGG) as 16-kHz mono float32, any length
    (channels are averaged)."""
    import soundfile as sf

    from hooked_asr.audio import load_audio

    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile's error names the format problem
        raise LiveError(
            f"cannot read the uploaded audio ({len(data)} bytes): {e}; upload a WAV, FLAC or OGG file"
        ) from None
    return load_audio(samples.mean(axis=1), sr, allow_long=True)


__all__ = ["LiveError", "decode_wav_bytes", "pick_window"]
