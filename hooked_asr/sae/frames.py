"""Streams of frame-level activations for SAE training, never all in memory.

A frame source (:class:`~hooked_asr.activations.stream.FrameSource`) is an iterable of
chunks ``[n, d_in]`` with a ``position`` (chunks already yielded) that ``state_dict`` /
``load_state_dict`` save and restore, so a trainer resumed from a checkpoint reads exactly
the frames it would have read. A store's frames stream through ``store.frame_source(hook)``.

:class:`ModelFrameSource` runs a model's encoder on audio clips and keeps one hook's
activation for the frames that carry the clip (Whisper pads every clip to 30 s), counted
by :func:`hooked_asr.audio.audio_frames` at the hook's own resolution (20 ms frames in
Whisper's encoder blocks, 40 ms after Qwen2-Audio's pooling), plus ``pad_frames`` frames of
the padding after it, so that silence features exist without padding dominating the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from hooked_asr.activations.stream import FrameSource, StoreFrameSource
from hooked_asr.audio import audio_frames, window_samples


class TensorFrameSource(FrameSource):
    """Frames already in a tensor ``[n_frames, d_in]``, yielded ``chunk_size`` at a time."""

    def __init__(self, frames: Float[torch.Tensor, "n_frames d_in"], chunk_size: int = 1024):
        super().__init__()
        if frames.ndim != 2:
            raise ValueError(f"frames must be [n_frames, d_in], got shape {tuple(frames.shape)}")
        self.frames, self.chunk_size, self.d_in = frames, chunk_size, frames.shape[1]
        self.n_chunks = math.ceil(frames.shape[0] / chunk_size)

    def _chunk(self, i: int) -> torch.Tensor:
        return self.frames[i * self.chunk_size : (i + 1) * self.chunk_size]

    def fingerprint(self) -> dict[str, Any]:
        from hooked_asr.fingerprint import data_hash

        return {**super().fingerprint(), "chunk_size": int(self.chunk_size), "data": data_hash(self.frames)}


class GeneratedFrameSource(FrameSource):
    """Chunks made on demand by ``make_chunk(i)`` (deterministic in ``i``), e.g. synthetic data."""

    def __init__(self, make_chunk: Callable[[int], torch.Tensor], d_in: int, n_chunks: int | None = None):
        super().__init__()
        self.make_chunk, self.d_in, self.n_chunks = make_chunk, d_in, n_chunks

    def _chunk(self, i: int) -> torch.Tensor:
        return self.make_chunk(i)

    def fingerprint(self) -> dict[str, Any]:
        # The function's code cannot be hashed reliably; its name and first chunk stand for it.
        from hooked_asr.fingerprint import data_hash

        name = f"{getattr(self.make_chunk, '__module__', '')}.{getattr(self.make_chunk, '__qualname__', '')}"
        return {**super().fingerprint(), "make_chunk": name, "data": data_hash(self.make_chunk(0))}


class _Captured(Exception):
    """Raised from the capture hook: everything after the hooked site is not needed."""


class ModelFrameSource(FrameSource):
    """Frames of ``hook_name`` (an encoder hook ``[batch, frame, d]``) for a sequence of clips.

    ``audios[i]`` is a 1-D float array at 16 kHz (a lazy sequence works: only
    ``batch_size`` clips are held at once). One chunk = one batch of clips.
    """

    def __init__(
        self,
        model: Any,
        audios: Sequence[np.ndarray],
        hook_name: str,
        batch_size: int = 4,
        pad_frames: int = 8,
    ):
        super().__init__()
        model.check_hook_name(hook_name)
        if not hook_name.startswith("encoder."):
            raise ValueError(f"{hook_name!r} is not an encoder hook; frame-level SAEs read encoder.* hooks")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.audios, self.hook_name = model, audios, hook_name
        self.batch_size, self.pad_frames = batch_size, pad_frames
        self.n_chunks = math.ceil(len(audios) / batch_size)
        self.d_in = model.cfg.encoder.d_model

    def clip_frames(self, audio: np.ndarray, n_frames: int | None = None) -> int:
        """Frames kept for ``audio`` out of the hook's ``n_frames`` (default: the encoder's
        ``n_ctx``): the frames that carry it plus ``pad_frames``."""
        n_frames = self.model.cfg.encoder.n_ctx if n_frames is None else n_frames
        return min(n_frames, audio_frames(len(audio), n_frames, window_samples(self.model)) + self.pad_frames)

    @torch.no_grad()
    def activations(self, clips: Sequence[np.ndarray]) -> Float[torch.Tensor, "batch frame d"]:
        """The hook's activation for whole (padded) clips; the encoder stops at the hook."""
        feats = self.model.prepare_features(list(clips))
        store: dict[str, torch.Tensor] = {}

        def capture(x: torch.Tensor, hook: Any) -> None:
            store["x"] = x.detach()
            raise _Captured

        try:
            with self.model.hooks(fwd_hooks=[(self.hook_name, capture)]):
                self.model.encode(**feats)
        except _Captured:
            pass
        return store["x"].float()

    def chunk_with_meta(
        self, i: int
    ) -> tuple[Float[torch.Tensor, "n d"], Int[torch.Tensor, " n"], Int[torch.Tensor, " n"]]:
        """Frames of batch ``i`` with each frame's clip index and frame index within its clip."""
        lo = i * self.batch_size
        clips = [self.audios[j] for j in range(lo, min(lo + self.batch_size, len(self.audios)))]
        acts = self.activations(clips)
        xs, clip_idx, frame_idx = [], [], []
        for b, clip in enumerate(clips):
            n = self.clip_frames(clip, acts.shape[1])
            xs.append(acts[b, :n])
            clip_idx.append(torch.full((n,), lo + b, dtype=torch.long))
            frame_idx.append(torch.arange(n))
        return torch.cat(xs), torch.cat(clip_idx), torch.cat(frame_idx)

    def _chunk(self, i: int) -> torch.Tensor:
        return self.chunk_with_meta(i)[0]

    def fingerprint(self) -> dict[str, Any]:
        """Model name and weights hash, hook, the clips' content hash, batching and padding."""
        from hooked_asr.fingerprint import data_hash, model_identity

        audio = data_hash([data_hash(np.asarray(self.audios[j], dtype=np.float32)) for j in range(len(self.audios))])
        return {
            **super().fingerprint(),
            "model": model_identity(self.model),
            "hook_name": self.hook_name,
            "audio": audio,
            "batch_size": int(self.batch_size),
            "pad_frames": int(self.pad_frames),
        }

    def iter_with_meta(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for i in range(self.n_chunks):
            yield self.chunk_with_meta(i)


class CachedFrameSource(FrameSource):
    """A finite source whose chunks are written to ``folder/chunk_{i}.safetensors`` the
    first time they are read and read back from disk afterwards, so several passes over
    expensive activations (an encoder run per clip) cost one pass of compute. Memory
    holds one chunk at a time. A folder from another source is not detected: use a fresh
    folder per (model, hook, data)."""

    def __init__(self, source: FrameSource, folder: str | Path):
        super().__init__()
        if source.n_chunks is None:
            raise ValueError("CachedFrameSource needs a finite source (n_chunks is None)")
        self.source, self.folder, self.d_in, self.n_chunks = source, Path(folder), source.d_in, source.n_chunks
        self.folder.mkdir(parents=True, exist_ok=True)

    def _chunk(self, i: int) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        path = self.folder / f"chunk_{i:06d}.safetensors"
        if path.exists():
            return load_file(str(path))["frames"]
        x = self.source._chunk(i).contiguous()
        tmp = path.with_suffix(".tmp")
        save_file({"frames": x}, str(tmp))
        tmp.replace(path)  # a crash never leaves a half-written chunk that looks complete
        return x

    def fingerprint(self) -> dict[str, Any]:
        return {**self.source.fingerprint(), "source": f"CachedFrameSource({self.source.fingerprint()['source']})"}

    @property
    def hook_name(self) -> str:
        return getattr(self.source, "hook_name", "")


__all__ = [
    "CachedFrameSource",
    "GeneratedFrameSource",
    "ModelFrameSource",
    "TensorFrameSource",
]
