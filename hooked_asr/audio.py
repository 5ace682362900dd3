"""Audio in, log-mel features out: reading, validation, resampling, Whisper's log-mel.

``log_mel_spectrogram`` equals Hugging Face's ``WhisperFeatureExtractor`` (80 or 128
bins): 30 s windows (480000 samples at 16 kHz, zero-padded), a 400-point periodic Hann
STFT with hop 160, power spectrum through Slaney-normalised mel filters, then
``x = log10(max(mel, 1e-10)); x = max(x, max(x) - 8); x = (x + 4) / 4``.

What :func:`load_audio` decides for odd input (the README's "Bad input" lists the same):

* silence is a level, not exact zeros: a clip whose absolute peak is below
  ``SILENCE_PEAK = 1e-4`` (-80 dBFS, about three steps of 16-bit audio) is silent and
  raises unless ``allow_silence=True`` (Whisper hallucinates on it);
* float samples must lie in [-1, 1]: a peak above ``MAX_FLOAT_PEAK = 2`` is int16-range
  data in a float array and raises (divide by 32768, or pass the int16 array); a peak in
  (1, 2] is clipping and only warns;
* a 2-D array is ambiguous (two clips, or two channels?) and raises unless one axis has
  length 1; a batch is a list of 1-D arrays, multichannel audio is mixed by the caller.
  Files are unambiguous (soundfile gives ``[samples, channels]``): channels are averaged
  with a warning;
* ``sampling_rate`` must be a positive whole number (``16000``, ``16000.0``,
  ``np.int64(16000)``); ``16000.5``, ``"16000"`` and ``True`` raise;
* a plain list of numbers is one clip; a list of arrays, paths or lists is a batch;
* int16 arrays are scaled by 1/32768; other integer, bool, complex, string or object
  arrays raise; ready features must be floating point.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS  # 480000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000
MEL_FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01: one mel frame (openai-whisper's HOP_LENGTH / SAMPLE_RATE)
SILENCE_PEAK = 1e-4  # below this absolute peak (-80 dBFS) a clip is silence
MAX_FLOAT_PEAK = 2.0  # above this, float samples are unscaled integer audio, not clipping
# Whisper's encoder halves the mel frame rate (conv2, stride 2): 1500 frames of 20 ms.
MEL_FRAMES_PER_ENCODER_FRAME = 2  # openai-whisper's input_stride: mel frames per timestamp step
SAMPLES_PER_ENCODER_FRAME = MEL_FRAMES_PER_ENCODER_FRAME * HOP_LENGTH  # 320
ENCODER_FRAME_SECONDS = SAMPLES_PER_ENCODER_FRAME / SAMPLE_RATE  # 0.02
N_ENCODER_FRAMES = N_SAMPLES // SAMPLES_PER_ENCODER_FRAME  # 1500
# One timestamp token per encoder frame: <|0.00|> .. <|30.00|> (openai-whisper's TIME_PRECISION).
TIME_PRECISION = ENCODER_FRAME_SECONDS  # 0.02
N_TIMESTAMPS = N_ENCODER_FRAMES + 1  # 1501


class AudioError(ValueError):
    """Audio that cannot be turned into a faithful model input."""


def check_sampling_rate(sampling_rate: Any) -> int:
    """A positive whole-number rate as ``int``; :class:`AudioError` for anything else."""
    if isinstance(sampling_rate, (bool, np.bool_)):
        raise AudioError(f"sampling_rate must be a number of samples per second, got the bool {sampling_rate}")
    if isinstance(sampling_rate, (int, np.integer)):
        sr = int(sampling_rate)
    elif isinstance(sampling_rate, (float, np.floating)):
        if not math.isfinite(sampling_rate) or sampling_rate != int(sampling_rate):
            raise AudioError(
                f"sampling_rate must be a whole number of Hz (resampling needs an exact ratio), got {sampling_rate}; "
                "round it if that is what you mean"
            )
        sr = int(sampling_rate)
    else:
        raise AudioError(
            f"sampling_rate must be an int (samples per second), got {type(sampling_rate).__name__} {sampling_rate!r}"
        )
    if sr <= 0:
        raise AudioError(f"sampling rate must be positive, got {sampling_rate}")
    return sr


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``), exact ratio."""
    orig_sr = check_sampling_rate(orig_sr)
    if orig_sr == target_sr:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, int(target_sr))
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def _array_to_mono(audio: np.ndarray, where: str) -> np.ndarray:
    """Arrays have no channel convention: only a 2-D array with a length-1 axis is one clip."""
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2 and 1 in audio.shape:
        return audio.reshape(-1)
    if audio.ndim == 2:
        raise AudioError(
            f"{where} has shape {tuple(audio.shape)}: is that {audio.shape[0]} clips or {min(audio.shape)} channels? "
            "Pass one clip as a 1-D array, several clips as a list of 1-D arrays, and mix multichannel audio to "
            "mono first (e.g. audio.mean(axis=1) for [samples, channels])"
        )
    raise AudioError(
        f"{where} has {audio.ndim} dimensions; expected 1-D mono audio (ready log-mel features are a torch tensor "
        "[batch, n_mels, 3000])"
    )


def _file_to_mono(audio: np.ndarray, where: str) -> np.ndarray:
    """soundfile's ``[samples, channels]``: channels averaged, with a warning."""
    n_ch = audio.shape[1]
    if n_ch > 1:
        warnings.warn(f"{where} has {n_ch} channels; mixing them to mono by averaging", stacklevel=3)
    return audio.mean(axis=1)


def _as_array(audio: Any, where: str) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        return audio.detach().cpu().numpy()
    if isinstance(audio, np.ndarray):
        return audio
    if isinstance(audio, (list, tuple)) and all(_is_number(v) for v in audio):
        return np.asarray(audio, dtype=np.float64)
    raise AudioError(
        f"cannot read audio from a {type(audio).__name__}: pass a file path, a 1-D float array or tensor at "
        "sampling_rate Hz, or a list of numbers"
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def load_audio(
    audio: str | Path | np.ndarray | torch.Tensor | list[float],
    sampling_rate: int | None = None,
    allow_long: bool = False,
    allow_silence: bool = False,
) -> Float[np.ndarray, "samples"]:
    """Read and validate audio; return float32 mono at 16 kHz.

    ``audio`` is a file path (anything soundfile reads: wav, flac, ogg), an array or tensor
    at ``sampling_rate`` Hz (16000 if not given; int16 is scaled by 1/32768), or a list of
    numbers. Raises :class:`AudioError` for empty, non-finite, silent (peak below
    ``SILENCE_PEAK``, unless ``allow_silence``), unscaled (peak above ``MAX_FLOAT_PEAK``),
    ambiguous 2-D or, unless ``allow_long``, longer-than-30-s audio (module docstring).
    """
    if sampling_rate is not None:
        sampling_rate = check_sampling_rate(sampling_rate)
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if not path.exists():
            raise AudioError(f"audio file not found: {path}")
        import soundfile as sf

        try:
            data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises its own LibsndfileError
            raise AudioError(f"cannot read {path} as audio ({e}); use wav, flac or ogg") from None
        if sampling_rate is not None and sampling_rate != file_sr:
            raise AudioError(f"{path} is {file_sr} Hz but sampling_rate={sampling_rate} was passed; drop the argument")
        where, sr = str(path), file_sr
        if data.size == 0:
            raise AudioError(f"{where} is empty (0 samples)")
        data = _file_to_mono(data, where)
    else:
        where = "the audio array"
        data = _as_array(audio, where)
        if data.dtype == np.int16:
            data = data.astype(np.float32) / 32768.0
        elif not np.issubdtype(data.dtype, np.floating):
            raise AudioError(
                f"{where} has dtype {data.dtype}; pass float samples in [-1, 1] or int16 (scaled by 1/32768)"
            )
        data = _array_to_mono(data, where)
        sr = SAMPLE_RATE if sampling_rate is None else sampling_rate
    if data.size == 0:
        raise AudioError(f"{where} is empty (0 samples)")
    bad = ~np.isfinite(data)
    if bad.any():
        raise AudioError(f"{where} has {int(bad.sum())} NaN/inf samples of {data.size}; clean or drop them first")
    data = np.asarray(data, dtype=np.float32)
    peak = float(np.abs(data).max())
    if peak > MAX_FLOAT_PEAK:
        raise AudioError(
            f"{where} peaks at {peak:.1f}, but float samples lie in [-1, 1]: this looks like int16 audio stored as "
            "float. Divide it by 32768 (or pass the int16 array itself)"
        )
    data = resample(data, sr)
    seconds = data.size / SAMPLE_RATE
    if seconds > CHUNK_SECONDS + 1e-6 and not allow_long:
        raise AudioError(
            f"{where} lasts {seconds:.1f} s; Whisper reads at most {CHUNK_SECONDS} s at a time. Split it with "
            f"hooked_asr.audio.chunk_audio(audio) and transcribe each chunk"
        )
    if peak < SILENCE_PEAK and not allow_silence:
        raise AudioError(
            f"{where} is silent (peak {peak:.1e} < {SILENCE_PEAK:g}, i.e. below -80 dBFS); Whisper hallucinates on "
            "silence. Pass allow_silence=True if that is what you want to study"
        )
    if peak > 1.0 + 1e-6:
        warnings.warn(
            f"{where} peaks at {peak:.2f}; samples above 1 are clipped audio (expected [-1, 1])", stacklevel=2
        )
    return data


def chunk_audio(audio: np.ndarray, chunk_seconds: float = CHUNK_SECONDS) -> list[np.ndarray]:
    """Split 16 kHz audio into consecutive chunks of at most ``chunk_seconds`` (the last may be shorter)."""
    step = int(chunk_seconds * SAMPLE_RATE)
    return [audio[i : i + step] for i in range(0, len(audio), step)]


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """Slaney mel filter bank ``[n_fft // 2 + 1, n_mels]`` from 0 to 8 kHz, the one Whisper uses."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(fb).float()


def log_mel_spectrogram(
    audio: np.ndarray | torch.Tensor, n_mels: int = 80, padding: int | None = None
) -> Float[torch.Tensor, "batch n_mels frames"]:
    """Whisper log-mel features of 16 kHz audio ``[samples]`` or ``[batch, samples]``, padded to 30 s
    (3000 frames). With ``padding=p``, audio of any length gets ``p`` zero samples appended instead
    and one normalisation over the whole (openai-whisper's long-form features, ``p = N_SAMPLES``)."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio).float()
    if x.ndim == 1:
        x = x[None]
    if padding is not None:
        x = torch.nn.functional.pad(x, (0, padding))
    elif x.shape[-1] > N_SAMPLES:
        raise AudioError(f"audio has {x.shape[-1]} samples; at most {N_SAMPLES} (30 s at 16 kHz)")
    else:
        x = torch.nn.functional.pad(x, (0, N_SAMPLES - x.shape[-1]))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


def _check_features(features: torch.Tensor, n_mels: int) -> torch.Tensor:
    if not torch.is_floating_point(features):
        raise AudioError(
            f"features must be floating point (log-mel from hooked_asr.audio.log_mel_spectrogram), got dtype {features.dtype}"
        )
    if features.shape[1] != n_mels:
        raise AudioError(f"features have {features.shape[1]} mel bins; this model reads {n_mels}")
    return features


def is_batch_input(audio: Any) -> bool:
    """Whether ``transcribe``-style input is a batch: a list/tuple of clips (not a list of numbers)."""
    return isinstance(audio, (list, tuple)) and not (audio and all(_is_number(v) for v in audio))


def prepare_features(
    audio: Any, n_mels: int, sampling_rate: int | None = None, allow_silence: bool = False
) -> tuple[Float[torch.Tensor, "batch n_mels 3000"], bool]:
    """Turn what a user hands ``transcribe`` into features; returns ``(features, is_batch)``.

    Accepts a path, a 1-D array (or list of numbers), a list of those, or ready
    floating-point features ``[batch, n_mels, 3000]``.
    """
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        return _check_features(audio, n_mels), True
    if is_batch_input(audio):
        if not audio:
            raise AudioError("an empty list of audio was passed")
        waves = [load_audio(a, sampling_rate, allow_silence=allow_silence) for a in audio]
        return torch.cat([log_mel_spectrogram(w, n_mels) for w in waves]), True
    return log_mel_spectrogram(load_audio(audio, sampling_rate, allow_silence=allow_silence), n_mels), False


def masked_log_mel(
    audio: Any, n_mels: int, n_frames: int = N_FRAMES, sampling_rate: int | None = None, allow_silence: bool = False
) -> tuple[Float[torch.Tensor, "batch n_mels n_frames"], Int[torch.Tensor, "batch n_frames"], bool]:
    """Log-mel features cut to ``n_frames`` and the 0/1 mask of the frames that hold audio;
    returns ``(features, mask, is_batch)`` (for encoders that mask padding, as Qwen2-Audio's).

    ``audio``: a path, a 1-D array at ``sampling_rate`` (16 kHz if not given), a list of those,
    or ready features ``[batch, n_mels, frames]`` (every frame real). The mask marks the
    ``ceil(samples / 160)`` frames that hold audio, as
    ``WhisperFeatureExtractor(return_attention_mask=True)`` does.
    """
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        _check_features(audio, n_mels)
        return audio, torch.ones(audio.shape[0], audio.shape[-1], dtype=torch.long, device=audio.device), True
    is_batch = is_batch_input(audio)
    items = list(audio) if is_batch else [audio]
    if not items:
        raise AudioError("an empty list of audio was passed")
    max_samples = n_frames * HOP_LENGTH
    feats, masks = [], []
    for a in items:
        wave = load_audio(a, sampling_rate, allow_long=True, allow_silence=allow_silence)
        if wave.size > max_samples:
            raise AudioError(
                f"the audio lasts {wave.size / SAMPLE_RATE:.1f} s; Qwen2-Audio's audio tower reads at most "
                f"{max_samples / SAMPLE_RATE:g} s ({n_frames} mel frames, {n_frames // 4} audio tokens). Split it with "
                f"hooked_asr.audio.chunk_audio(audio, {max_samples / SAMPLE_RATE:g}) and transcribe each chunk"
            )
        feats.append(log_mel_spectrogram(wave, n_mels)[..., :n_frames])
        m = torch.zeros(1, n_frames, dtype=torch.long)
        m[:, : min(math.ceil(wave.size / HOP_LENGTH), n_frames)] = 1
        masks.append(m)
    return torch.cat(feats), torch.cat(masks), is_batch


def audio_frames(n_samples: int, n_frames: int = N_ENCODER_FRAMES, window_samples: int = N_SAMPLES) -> int:
    """Frames (of ``n_frames`` spanning a window of ``window_samples``) that overlap the first
    ``n_samples``: ``ceil(n_samples * n_frames / window_samples)``, between 1 and ``n_frames``.

    The one frame counter: it reads the resolution off the activation (``n_frames``), so it
    serves every hook: Whisper's encoder (1500 frames: ``ceil(n_samples / 320)``), conv1 and the
    mel (3000), Qwen2-Audio's pooled hooks (750). Pass :func:`window_samples` of the model, so a
    model with a shorter window counts right.
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    return max(1, min(n_frames, math.ceil(n_samples * n_frames / window_samples)))


def window_samples(model: Any) -> int:
    """Samples in ``model``'s audio window: 160 per mel frame its encoder reads (480000 for
    Whisper and the real Qwen2-Audio, 30 s; less for small test models with a shorter window)."""
    enc = getattr(getattr(model, "cfg", None), "encoder", None)
    return int(enc.n_frames) * HOP_LENGTH if enc is not None else N_SAMPLES


__all__ = [
    "CHUNK_SECONDS",
    "ENCODER_FRAME_SECONDS",
    "HOP_LENGTH",
    "MAX_FLOAT_PEAK",
    "MEL_FRAME_SECONDS",
    "N_ENCODER_FRAMES",
    "N_FFT",
    "N_FRAMES",
    "N_SAMPLES",
    "N_TIMESTAMPS",
    "SAMPLE_RATE",
    "SAMPLES_PER_ENCODER_FRAME",
    "SILENCE_PEAK",
    "TIME_PRECISION",
    "audio_frames",
    "AudioError",
    "check_sampling_rate",
    "chunk_audio",
    "is_batch_input",
    "load_audio",
    "log_mel_spectrogram",
    "masked_log_mel",
    "mel_filters",
    "prepare_features",
    "resample",
    "window_samples",
]
