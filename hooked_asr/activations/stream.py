"""Resumable streams of activation rows ``[n, d]``, one chunk at a time, never all in memory.

A stream yields chunks and counts them in ``position``; ``state_dict`` / ``load_state_dict``
save and restore it, so a consumer resumed from a checkpoint (the SAE trainer) reads exactly
the rows it would have read. :class:`StoreFrameSource` streams one hook of an
:class:`~hooked_asr.activations.store.ActivationStore`, one shard per chunk; the SAE's
model-driven sources (:mod:`hooked_asr.sae.frames`) build on the same base.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float


class FrameSource:
    """Base: subclasses define ``d_in``, ``n_chunks`` (or None if endless) and ``_chunk(i)``."""

    d_in: int
    n_chunks: int | None = None

    def __init__(self) -> None:
        self.position = 0

    def _chunk(self, i: int) -> Float[torch.Tensor, "n d_in"]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Float[torch.Tensor, "n d_in"]]:
        while self.n_chunks is None or self.position < self.n_chunks:
            chunk = self._chunk(self.position)
            self.position += 1
            yield chunk

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])

    def fingerprint(self) -> dict[str, Any]:
        """What decides the rows this source yields (JSON-able), so that a consumer resumed from a
        checkpoint can refuse another source. Subclasses add their hook, model and data hashes."""
        return {
            "source": type(self).__name__,
            "d_in": int(self.d_in),
            "n_chunks": None if self.n_chunks is None else int(self.n_chunks),
        }


class StoreFrameSource(FrameSource):
    """The rows of one hook of an :class:`~hooked_asr.activations.store.ActivationStore`
    (extracted with pooling ``none``: every frame), one chunk per shard."""

    def __init__(self, store: Any, hook_name: str):
        super().__init__()
        self.store, self.hook_name = store, hook_name
        self.d_in, self.n_chunks = store.d(hook_name), store.n_shards

    def _chunk(self, i: int) -> torch.Tensor:
        return self.store.shard_rows(i, self.hook_name)

    def fingerprint(self) -> dict[str, Any]:
        """The hook, the store's spec (model, pooling, dataset) hash and its data's content hash."""
        m = self.store.manifest
        return {
            **super().fingerprint(),
            "hook_name": self.hook_name,
            "spec_hash": m.get("spec_hash"),
            "data": m.get("content_hash"),
        }


__all__ = ["FrameSource", "StoreFrameSource"]
