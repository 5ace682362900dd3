"""Audio in, log-mel features out: reading, validation, resampling, Whisper's log-mel.

``log_mel_spectrogram`` equals Hugging Face's ``WhisperFeatureExtractor`` (80 or 128
bins): 30 s windows (480000 samples at 16 kHz, zero-padded), a 400-point periodic Hann
STFT with hop 160, power spectrum through Slaney-normalised mel filters, then
``x = log10(max(mel, 1e-10)); x = max(x, max(x) - 8); x = (x + 4) / 4``.
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
# Whisper's encoder halves the mel frame rate (conv2, stride 2): 1500 frames of 20 ms.
SAMPLES_PER_ENCODER_FRAME = 2 * HOP_LENGTH  # 320
ENCODER_FRAME_SECONDS = SAMPLES_PER_ENCODER_FRAME / SAMPLE_RATE  # 0.02
N_ENCODER_FRAMES = N_SAMPLES // SAMPLES_PER_ENCODER_FRAME  # 1500


class AudioError(ValueError):
    """Audio that cannot be turned into a faithful model input."""


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``), exact ratio."""
    if orig_sr == target_sr:
        return audio
    if orig_sr <= 0:
        raise AudioError(f"sampling rate must be positive, got {orig_sr}")
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_sr), int(target_sr))
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def _to_mono(audio: np.ndarray, where: str) -> np.ndarray:
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        # Channels are the short axis: soundfile gives [samples, channels], some tools [channels, samples].
        channel_axis = 1 if audio.shape[1] <= audio.shape[0] else 0
        n_ch = audio.shape[channel_axis]
        if n_ch > 8:
            raise AudioError(
                f"{where} has shape {audio.shape}: expected 1-D mono audio or [samples, channels]; "
                "for a batch pass a list of 1-D arrays"
            )
        if n_ch > 1:
            warnings.warn(f"{where} has {n_ch} channels; mixing them to mono by averaging", stacklevel=3)
        return audio.mean(axis=channel_axis)
    raise AudioError(f"{where} has {audio.ndim} dimensions; expected 1-D mono audio")


def load_audio(
    audio: str | Path | np.ndarray | torch.Tensor,
    sampling_rate: int | None = None,
    allow_long: bool = False,
    allow_silence: bool = False,
) -> Float[np.ndarray, "samples"]:
    """Read and validate audio; return float32 mono at 16 kHz.

    ``audio`` is a file path (anything soundfile reads: wav, flac, ogg) or an array at
    ``sampling_rate`` Hz (16000 if not given; int16 arrays are scaled by 1/32768).
    Raises :class:`AudioError` for empty, non-finite, silent (unless ``allow_silence``) or,
    unless ``allow_long``, longer-than-30-s audio.
    """
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
        data = _to_mono(data, where)
    else:
        where = "the audio array"
        data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if data.dtype == np.int16:
            data = data.astype(np.float32) / 32768.0
        elif not np.issubdtype(data.dtype, np.floating):
            raise AudioError(f"{where} has dtype {data.dtype}; pass float samples in [-1, 1] or int16")
        data = _to_mono(data, where)
        sr = SAMPLE_RATE if sampling_rate is None else sampling_rate
    data = np.asarray(data, dtype=np.float32)
    if data.size == 0:
        raise AudioError(f"{where} is empty (0 samples)")
    bad = ~np.isfinite(data)
    if bad.any():
        raise AudioError(f"{where} has {int(bad.sum())} NaN/inf samples of {data.size}; clean or drop them first")
    data = resample(data, sr)
    seconds = data.size / SAMPLE_RATE
    if seconds > CHUNK_SECONDS + 1e-6 and not allow_long:
        raise AudioError(
            f"{where} lasts {seconds:.1f} s; Whisper reads at most {CHUNK_SECONDS} s at a time. Split it with "
            f"hooked_asr.audio.chunk_audio(audio) and transcribe each chunk"
        )
    peak = float(np.abs(data).max())
    if peak == 0.0 and not allow_silence:
        raise AudioError(
            f"{where} is silent (all samples zero); Whisper hallucinates on silence. "
            "Pass allow_silence=True if that is what you want to study"
        )
    if peak > 1.5:
        warnings.warn(f"{where} peaks at {peak:.1f}; expected samples in [-1, 1] (is it unscaled int audio?)", stacklevel=2)
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
    audio: np.ndarray | torch.Tensor, n_mels: int = 80
) -> Float[torch.Tensor, "batch n_mels 3000"]:
    """Whisper log-mel features of 16 kHz audio ``[samples]`` or ``[batch, samples]``, padded to 30 s."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio).float()
    if x.ndim == 1:
        x = x[None]
    if x.shape[-1] > N_SAMPLES:
        raise AudioError(f"audio has {x.shape[-1]} samples; at most {N_SAMPLES} (30 s at 16 kHz)")
    x = torch.nn.functional.pad(x, (0, N_SAMPLES - x.shape[-1]))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


def prepare_features(
    audio: Any, n_mels: int, sampling_rate: int | None = None
) -> tuple[Float[torch.Tensor, "batch n_mels 3000"], bool]:
    """Turn what a user hands ``transcribe`` into features; returns ``(features, is_batch)``.

    Accepts a path, a 1-D array, a list of those, or ready features ``[batch, n_mels, 3000]``.
    """
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        if audio.shape[1] != n_mels:
            raise AudioError(f"features have {audio.shape[1]} mel bins; this model reads {n_mels}")
        return audio, True
    if isinstance(audio, (list, tuple)):
        if not audio:
            raise AudioError("an empty list of audio was passed")
        waves = [load_audio(a, sampling_rate) for a in audio]
        return torch.cat([log_mel_spectrogram(w, n_mels) for w in waves]), True
    return log_mel_spectrogram(load_audio(audio, sampling_rate), n_mels), False


def masked_log_mel(
    audio: Any, n_mels: int, n_frames: int = N_FRAMES, sampling_rate: int | None = None
) -> tuple[Float[torch.Tensor, "batch n_mels n_frames"], Int[torch.Tensor, "batch n_frames"], bool]:
    """Log-mel features cut to ``n_frames`` and the 0/1 mask of the frames that hold audio;
    returns ``(features, mask, is_batch)`` (for encoders that mask padding, as Qwen2-Audio's).

    ``audio``: a path, a 1-D array at ``sampling_rate`` (16 kHz if not given), a list of those,
    or ready features ``[batch, n_mels, frames]`` (every frame real). The mask marks the
    ``ceil(samples / 160)`` frames that hold audio, as
    ``WhisperFeatureExtractor(return_attention_mask=True)`` does.
    """
    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        if audio.shape[1] != n_mels:
            raise AudioError(f"features have {audio.shape[1]} mel bins; this model reads {n_mels}")
        return audio, torch.ones(audio.shape[0], audio.shape[-1], dtype=torch.long, device=audio.device), True
    is_batch = isinstance(audio, (list, tuple))
    items = list(audio) if is_batch else [audio]
    if not items:
        raise AudioError("an empty list of audio was passed")
    max_samples = n_frames * HOP_LENGTH
    feats, masks = [], []
    for a in items:
        wave = load_audio(a, sampling_rate, allow_long=True)
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
