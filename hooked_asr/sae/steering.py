"""Splicing an SAE into a model, and steering through its features.

``splice(model, sae)`` replaces the activation at ``sae.cfg.hook_name`` by the SAE's
reconstruction ``x_hat`` (what an SAE's downstream cost measures). ``steer(model, sae,
interventions)`` keeps the error term, ``x -> x + (x_hat(f') - x_hat(f))``, where ``f'``
is ``f`` with chosen features edited, so the model sees its own activation moved only by
the edit: adding ``a`` to feature ``i`` moves every frame by ``a W_dec[i] / s``; scaling by
``c`` moves it by ``(c - 1) f_i W_dec[i] / s``; clamping sets ``f_i`` to a value. ``steer_direction(model, hook, direction, c)`` moves
every frame by ``c * direction`` (a probe's direction, say). All are context managers over the
model's hook API, go through one hook (:func:`masked_edit`) and remove it on exit, even on error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float

from hooked_asr.sae.model import SparseAutoencoder

Mode = Literal["add", "scale", "clamp"]


@dataclass
class FeatureIntervention:
    """Edit of SAE feature(s) ``feature``: ``add`` value, ``scale`` by value, or ``clamp`` to value."""

    feature: int | Sequence[int]
    mode: Mode = "add"
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("add", "scale", "clamp"):
            raise ValueError(f"mode must be 'add', 'scale' or 'clamp', got {self.mode!r}")

    @property
    def features(self) -> list[int]:
        return [self.feature] if isinstance(self.feature, int) else list(self.feature)


def apply_interventions(
    f: Float[torch.Tensor, "... d_sae"],
    interventions: Sequence[FeatureIntervention],
    frame_mask: Bool[torch.Tensor, "batch frame"] | None = None,
) -> Float[torch.Tensor, "... d_sae"]:
    """A copy of ``f`` with each intervention applied (on frames where ``frame_mask`` is True)."""
    out = f.clone()
    for iv in interventions:
        idx = torch.tensor(iv.features, device=f.device)
        bad = [i for i in iv.features if not 0 <= i < f.shape[-1]]
        if bad:
            raise IndexError(f"feature(s) {bad} out of range: the SAE has {f.shape[-1]} features (0-{f.shape[-1] - 1})")
        cur = out[..., idx]
        new = (
            cur + iv.value
            if iv.mode == "add"
            else cur * iv.value
            if iv.mode == "scale"
            else torch.full_like(cur, iv.value)
        )
        if frame_mask is not None:
            new = torch.where(frame_mask[..., None].to(f.device), new, cur)
        out[..., idx] = new
    return out


def _frame_mask_for(x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor | None:
    if frame_mask is None:
        return None
    m = frame_mask.to(torch.bool)
    if m.ndim == 1:
        m = m[None].expand(x.shape[0], -1)
    if tuple(m.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"frame_mask has shape {tuple(frame_mask.shape)}; the activation is {tuple(x.shape[:2])} [batch, frame]"
        )
    return m


def masked_edit(
    edit: Callable[[torch.Tensor], torch.Tensor],
    frame_mask: Bool[torch.Tensor, "batch frame"] | Bool[torch.Tensor, " frame"] | None = None,
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """The one steering hook: ``x -> edit(x)`` on the frames where ``frame_mask`` is True (every
    position if None), ``x`` elsewhere. :func:`splice` / :func:`steer` edit through the SAE,
    :func:`steer_direction` along a vector."""

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        out = edit(x)
        m = _frame_mask_for(x, frame_mask)
        return out if m is None else torch.where(m[..., None], out, x)

    return hook


@contextmanager
def splice(
    model: Any,
    sae: SparseAutoencoder,
    use_error_term: bool = False,
    frame_mask: Bool[torch.Tensor, "batch frame"] | Bool[torch.Tensor, " frame"] | None = None,
) -> Iterator[SparseAutoencoder]:
    """Inside the block, ``sae.cfg.hook_name`` carries ``sae(x)`` instead of ``x`` (on the
    frames where ``frame_mask`` is True, all frames if None). Yields the SAE, whose own
    hooks (``hook_sae_acts`` ...) then fire during the model's forward passes."""
    name = sae.cfg.hook_name
    if not name:
        raise ValueError("the SAE has no hook_name in its config; set sae.cfg.hook_name to the site it was trained on")
    model.check_hook_name(name)
    previous = sae.use_error_term
    sae.use_error_term = use_error_term
    try:
        with model.hooks(fwd_hooks=[(name, masked_edit(sae, frame_mask))]):
            yield sae
    finally:
        sae.use_error_term = previous


@contextmanager
def steer(
    model: Any,
    sae: SparseAutoencoder,
    interventions: Sequence[FeatureIntervention],
    frame_mask: Bool[torch.Tensor, "batch frame"] | Bool[torch.Tensor, " frame"] | None = None,
) -> Iterator[SparseAutoencoder]:
    """Transcribe (or run anything) with features edited and the SAE's error kept.

    >>> with steer(model, sae, [FeatureIntervention(feature=7, mode="clamp", value=0.0)]):
    ...     model.transcribe(audio)
    """
    interventions = list(interventions)

    def edit(f: torch.Tensor, hook: Any) -> torch.Tensor:
        m = _frame_mask_for(f, frame_mask) if f.ndim >= 3 else None
        return apply_interventions(f, interventions, m)

    with sae.hooks(fwd_hooks=[("hook_sae_acts", edit)]), splice(model, sae, use_error_term=True):
        yield sae


@contextmanager
def steer_direction(
    model: Any,
    hook_name: str,
    direction: Float[torch.Tensor, " d_model"],
    coefficient: float,
    frame_mask: Bool[torch.Tensor, "batch frame"] | Bool[torch.Tensor, " frame"] | None = None,
) -> Iterator[None]:
    """Inside the block, ``x -> x + coefficient * direction`` at ``hook_name`` (on the frames where
    ``frame_mask`` is True): e.g. along a probe's unit direction
    (:attr:`hooked_asr.probing.probe.LinearProbe.direction`, in the raw activation space it was trained on).

    >>> with steer_direction(model, "encoder.blocks.2.hook_resid_post", probe.direction, 8.0):
    ...     model.transcribe(audio)
    """
    model.check_hook_name(hook_name)
    d = torch.as_tensor(direction).detach()
    if d.ndim != 1 or not torch.isfinite(d).all():
        raise ValueError(f"direction must be a finite 1-D vector [d_model], got shape {tuple(d.shape)}")
    if not (isinstance(coefficient, (int, float)) and math.isfinite(coefficient)):
        raise ValueError(f"coefficient must be a finite number, got {coefficient!r}")

    def edit(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != d.shape[0]:
            raise ValueError(f"the direction has {d.shape[0]} dimensions; {hook_name} carries {x.shape[-1]}")
        return x + coefficient * d.to(device=x.device, dtype=x.dtype)

    with model.hooks(fwd_hooks=[(hook_name, masked_edit(edit, frame_mask))]):
        yield


def __getattr__(name: str) -> Any:
    # The old name, kept so code written against it runs; in hooked_asr "Intervention" is a
    # component rewrite (hooked_asr.patching.Intervention), so the SAE edit has its own name.
    if name == "Intervention":
        import warnings

        warnings.warn(
            "hooked_asr.sae.steering.Intervention is now FeatureIntervention (Intervention names "
            "hooked_asr.patching's component rewrite)",
            DeprecationWarning,
            stacklevel=2,
        )
        return FeatureIntervention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FeatureIntervention", "apply_interventions", "masked_edit", "splice", "steer", "steer_direction"]
