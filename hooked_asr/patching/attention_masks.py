"""Attention masks: keep chosen heads off a window of keys (frames or tokens).

Interventions on the attention itself rather than on a head's output: set a head's scores on
some keys to ``-inf`` before the softmax (it renormalises over the other keys), or its pattern
weights to 0 after it (it writes less). They compose with the interventions of
:mod:`hooked_asr.patching.interventions` (``patched(model, [mask_attention(...), zero_ablate(...)])``)
and keep absolute positions right during cached generation through the same
:class:`~hooked_asr.patching.interventions.PositionTracker`. A hook on ``hook_attn_scores`` /
``hook_pattern`` makes the attention take its explicit (non-fused) path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from hooked_asr.patching.components import Component, parse_component
from hooked_asr.patching.interventions import HookFn, PositionTracker, as_index, position_kind


def frames_between(start_s: float, end_s: float) -> range:
    """Encoder frames covering ``[start_s, end_s)`` seconds: frame ``f`` spans
    ``[f, f + 1) * ENCODER_FRAME_SECONDS`` (20 ms: the stride-2 conv over 10 ms mel frames)."""
    from hooked_asr.audio import ENCODER_FRAME_SECONDS

    if not (0 <= start_s < end_s):
        raise ValueError(f"need 0 <= start_s < end_s, got {start_s}, {end_s}")
    step = ENCODER_FRAME_SECONDS
    return range(int(math.floor(start_s / step + 1e-9)), int(math.ceil(end_s / step - 1e-9)))


@dataclass
class AttentionMask:
    """Remove key positions ``keys`` from the attention of one head (or every head) of one attention.

    ``mode="scores"``: ``scores[q, k] = -inf`` for masked ``k`` before the softmax, so the head
    renormalises over the other keys; ``mode="pattern"``: ``pattern[q, k] = 0`` after it, so the
    head's output loses those keys' share. ``keys`` are absolute key positions: encoder frames
    (cross-attention and the encoder; :func:`frames_between` converts seconds) or decoder token
    positions (decoder self-attention). ``queries`` (absolute, tokens or frames) and ``rows``
    restrict where it applies. Masking every key a query can see raises (nothing to attend to).
    Build with :func:`mask_attention`.
    """

    component: str | Component
    keys: Sequence[int] | range
    mode: Literal["scores", "pattern"] = "scores"
    queries: Sequence[int] | range | None = None
    rows: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("scores", "pattern"):
            raise ValueError(f"mode must be 'scores' (before the softmax) or 'pattern' (after it), got {self.mode!r}")

    def hook(self, model: Any, tracker: PositionTracker | None) -> tuple[str, HookFn]:
        comp = parse_component(model, self.component)
        if comp.kind not in ("attn", "cross_attn"):
            raise ValueError(f"mask_attention needs an attention or one head of it, got {comp.name!r}")
        site = "attn_scores" if self.mode == "scores" else "pattern"
        hook_name = f"{comp.stack}.blocks.{comp.layer}.{comp.kind}.hook_{site}"
        kind = position_kind(hook_name)
        if kind == "token" and tracker is None:
            raise ValueError(f"'{hook_name}' is a decoder site: pass a PositionTracker (patched() makes one)")
        keys = torch.as_tensor(list(self.keys), dtype=torch.long)
        fill = float("-inf") if self.mode == "scores" else 0.0

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
            batch, _, n_q, n_k = act.shape
            device = act.device
            start = tracker.start if kind == "token" else 0
            k = keys.to(device)
            k = k[(k >= 0) & (k < n_k)]
            q = torch.arange(start, start + n_q, device=device)
            if self.queries is not None:
                q = q[torch.isin(q, as_index(self.queries, device))]
            rows = as_index(self.rows, device) if self.rows is not None else torch.arange(batch, device=device)
            if len(k) == 0 or len(q) == 0 or len(rows) == 0:
                return None
            if int(rows.max()) >= batch:
                raise IndexError(f"mask on {comp} targets row {int(rows.max())}, but the batch has {batch} rows")
            heads = (
                torch.arange(act.shape[1], device=device)
                if comp.head is None
                else torch.tensor([comp.head], device=device)
            )
            new = act.clone()
            idx = (
                rows[:, None, None, None],
                heads[None, :, None, None],
                (q - start)[None, None, :, None],
                k[None, None, None, :],
            )
            new[idx] = fill
            if self.mode == "scores":
                sel = new[rows[:, None, None], heads[None, :, None], (q - start)[None, None, :]]
                if torch.isneginf(sel).all(-1).any():
                    raise ValueError(
                        f"mask on {comp}: keys {keys.tolist()[:5]}... cover every key some query can attend to "
                        f"(nothing left for the softmax); mask fewer keys, or use mode='pattern' to zero the weights"
                    )
            return new

        return hook_name, fn


def mask_attention(
    component: str | Component,
    keys: Sequence[int] | range,
    *,
    mode: Literal["scores", "pattern"] = "scores",
    queries: Sequence[int] | range | None = None,
    rows: Sequence[int] | None = None,
) -> AttentionMask:
    """Mask a head's (``...cross_attn.head.3``) or an attention's (``...cross_attn``: every head)
    attention to ``keys``; see :class:`AttentionMask`.

    >>> with patched(model, [mask_attention("decoder.blocks.2.cross_attn.head.1", frames_between(0.5, 1.0))]):
    ...     model.transcribe(audio)
    """
    return AttentionMask(component, keys, mode, queries, rows)


__all__ = ["AttentionMask", "frames_between", "mask_attention"]
