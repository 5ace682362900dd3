"""Interventions as composable hook factories.

Every intervention rewrites one component's activation ``a`` (a whole hook, or one head's
slice of ``hook_z``) at selected batch rows and positions::

    interpolate:  a~ = (1 - alpha) * a + alpha * a_ref     (alpha >= 0; 1 = patch, > 1 extrapolates)
    patch:        a~ = a_ref                                (interpolate with alpha = 1)
    zero ablate:  a~ = 0
    mean ablate:  a~ = mean of a over a reference set (items and positions)

``a_ref`` comes from a recorded reference run (:func:`record_reference`) and is indexed by
*absolute* position. During generation with a key/value cache a decoder hook sees only
the newest token, so a :class:`PositionTracker` tells each hook where its positions sit
in the sequence; the same intervention therefore gives the same transcript with
``use_cache=True`` and ``use_cache=False``. Positions that the reference does not have
(a longer transcript than the reference's tokens, a shorter reference input) raise
:class:`MissingPositionError` unless ``missing="keep"``, which leaves those positions
unpatched; they are never filled by broadcasting.

A reference (or mean) with batch 1 applies to every selected row; otherwise its batch
must equal the number of selected rows.

Attention patterns and scores (``hook_pattern`` / ``hook_attn_scores``, ``[batch, head, q_pos,
k_pos]``) are sites too: name one head's pattern with :func:`attention_site` (or pass the hook
name for every head); the position axis is the query axis, and a reference pattern is cut to
the keys the run has. :func:`~hooked_asr.patching.attention_masks.mask_attention` removes a window of keys (frames for
cross-attention and the encoder, tokens for decoder self-attention) from chosen heads'
attention: on the scores (``-inf`` before the softmax, so the head renormalises over the rest)
or on the pattern (weights set to 0, so the head writes less). A hook on either site makes the
attention take its explicit (non-fused) path.

    >>> ivs = [interpolate("encoder.blocks.3.mlp", ref_cache, alpha=0.5), zero_ablate("decoder.blocks.0.attn.head.2"),
    ...        mask_attention("decoder.blocks.1.cross_attn.head.3", keys=frames_between(1.0, 1.5))]
    >>> with patched(model, ivs):
    ...     out = model.transcribe(audio)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float

from hooked_asr.patching.components import Component, parse_component
from hooked_asr.patching.references import ReferenceCache, check_reference_prompt, decoder_tokens

MissingPolicy = Literal["error", "keep"]
HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]


class MissingPositionError(IndexError):
    """An intervention needed a reference position that the reference run does not have."""


# ---- which axis is "position" for a hook ------------------------------------------------
_CHANNEL_FIRST = ("encoder.hook_mel", "encoder.hook_conv1", "encoder.hook_conv2")


_PATTERN_SITES = ("hook_pattern", "hook_attn_scores")


def is_pattern_site(hook_name: str) -> bool:
    """``hook_pattern`` / ``hook_attn_scores``: ``[batch, head, q_pos, k_pos]``."""
    return hook_name.endswith(_PATTERN_SITES)


def position_kind(hook_name: str) -> Literal["token", "frame"]:
    """``token`` for decoder sites (indexed by decoder position), ``frame`` for audio sites.

    Cross-attention keys and values are computed from the encoder output, so they are
    frame-indexed although they live in the decoder. For attention patterns and scores this
    is the kind of the query axis (the keys of a cross-attention pattern are frames).
    """
    if hook_name in _CHANNEL_FIRST:
        raise ValueError(
            f"'{hook_name}' is [batch, channel, frame]; patch encoder.hook_pos_embed or a block site instead"
        )
    if hook_name.startswith("decoder.") and not hook_name.endswith(("cross_attn.hook_k", "cross_attn.hook_v")):
        return "token"
    return "frame"


def attention_site(model: Any, head: str | Component, site: Literal["pattern", "attn_scores"] = "pattern") -> Component:
    """One head's attention pattern (or scores) as a component: ``attention_site(model,
    "decoder.blocks.1.cross_attn.head.3")`` -> ``decoder.blocks.1.cross_attn.hook_pattern``, head 3."""
    comp = parse_component(model, head)
    if comp.kind not in ("attn", "cross_attn") or comp.head is None:
        raise ValueError(
            f"{comp.name!r} is not an attention head: write '<stack>.blocks.<l>.<attn|cross_attn>.head.<h>'"
        )
    if site not in ("pattern", "attn_scores"):
        raise ValueError(f"site must be 'pattern' or 'attn_scores', got {site!r}")
    hook = f"{comp.stack}.blocks.{comp.layer}.{comp.kind}.hook_{site}"
    model.check_hook_name(hook)
    return Component(f"{comp.name}.{site}", hook, comp.head, comp.stack, comp.layer, comp.kind)


def _pos_major(hook_name: str, t: torch.Tensor) -> torch.Tensor:
    """Patterns ``[batch, head, q, k]`` as ``[batch, q, head, k]``: position on axis 1 and head on
    axis 2, the layout of ``hook_z`` that the rewrite below works in (a view, no copy)."""
    return t.transpose(1, 2) if is_pattern_site(hook_name) else t


class PositionTracker:
    """Absolute decoder position of the first token each decoder call processes.

    Greedy generation calls the decoder on the whole prompt first, then (with a cache) on
    one new token per step; without a cache every call reruns the sequence from 0. The
    tracker watches ``decoder.hook_embed`` (fires once per decoder call) and
    ``encoder.hook_out`` (a new input): a call is a continuation of the previous one only
    if it feeds exactly one token and no encoder run or :meth:`reset` came in between.
    Functions in this package reset it before every run they start.
    """

    def __init__(self, model: Any):
        if "decoder.hook_embed" not in model.hook_dict:
            raise ValueError(
                "position tracking needs the hook 'decoder.hook_embed' (every model has it: docs/architecture.md)"
            )
        self._reset_hooks = [n for n in ("encoder.hook_out",) if n in model.hook_dict]
        self.start = 0
        self._end: int | None = None

    def reset(self) -> None:
        self.start, self._end = 0, None

    def _on_embed(self, x: torch.Tensor, hook: Any) -> None:
        n = x.shape[1]
        self.start = self._end if (self._end is not None and n == 1) else 0
        self._end = self.start + n

    def _on_new_input(self, x: torch.Tensor, hook: Any) -> None:
        self.reset()

    def hooks(self) -> list[tuple[str, HookFn]]:
        return [(n, self._on_new_input) for n in self._reset_hooks] + [("decoder.hook_embed", self._on_embed)]


# ---- sources of a_ref -------------------------------------------------------------------
@dataclass
class _CacheSource:
    """Reference activations with a position axis: ``cache[hook] [ref_batch, pos, ...]``."""

    cache: Mapping[str, torch.Tensor]

    def get(self, hook_name: str) -> torch.Tensor:
        if hook_name not in self.cache:
            raise KeyError(
                f"the reference cache has no activation for '{hook_name}'; record it with "
                f"record_reference(model, inputs, [... '{hook_name}' ...])"
            )
        return self.cache[hook_name]


@dataclass
class _ConstantSource:
    """A position-free value ``[ref_batch, ...]`` (zero or a mean), applied at every position."""

    values: Mapping[str, torch.Tensor] | None  # None: zeros

    def get(self, hook_name: str) -> torch.Tensor | None:
        if self.values is None:
            return None
        if hook_name not in self.values:
            raise KeyError(
                f"no mean for '{hook_name}'; compute it with mean_activations(model, inputs, ['{hook_name}'])"
            )
        return self.values[hook_name]


@dataclass
class Intervention:
    """One rewrite of one component; build with :func:`interpolate`, :func:`patch`,
    :func:`zero_ablate` or :func:`mean_ablate`.

    ``rows``: batch rows it applies to (``None``: all). ``positions``: absolute positions
    (``None``: all), e.g. the frames of one word. ``missing``: what to do with positions
    the reference lacks.
    """

    component: str | Component
    source: _CacheSource | _ConstantSource
    alpha: float = 1.0
    rows: Sequence[int] | None = None
    positions: Sequence[int] | range | None = None
    missing: MissingPolicy = "error"
    label: str = field(default="")

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite real >= 0 (0 = no change, 1 = full patch), got {self.alpha!r}")
        if self.missing not in ("error", "keep"):
            raise ValueError(f"missing must be 'error' or 'keep', got {self.missing!r}")

    def hook(self, model: Any, tracker: PositionTracker | None) -> tuple[str, HookFn]:
        comp = parse_component(model, self.component)
        kind = position_kind(comp.hook_name)
        if kind == "token" and tracker is None:
            raise ValueError(f"'{comp.hook_name}' is a decoder site: pass a PositionTracker (patched() makes one)")
        return comp.hook_name, _make_hook_fn(self, comp, kind, tracker)


def as_index(values: Sequence[int] | range | None, device: torch.device) -> torch.Tensor | None:
    """Rows or positions as a long index tensor on ``device`` (None stays None: all of them)."""
    return None if values is None else torch.as_tensor(list(values), dtype=torch.long, device=device)


def _make_hook_fn(iv: Intervention, comp: Component, kind: str, tracker: PositionTracker | None) -> HookFn:
    alpha = float(iv.alpha)

    pattern_site = is_pattern_site(comp.hook_name)

    def fn(act_in: torch.Tensor, hook: Any) -> torch.Tensor | None:
        if alpha == 0.0:
            return None  # (1 - 0) a + 0 a_ref = a: leave the activation untouched
        act = _pos_major(comp.hook_name, act_in)
        device = act.device
        batch, n = act.shape[0], act.shape[1]
        start = tracker.start if kind == "token" else 0
        rows = as_index(iv.rows, device)
        if rows is None:
            rows = torch.arange(batch, device=device)
        elif len(rows) and int(rows.max()) >= batch:
            raise IndexError(f"intervention on {comp} targets row {int(rows.max())}, but the batch has {batch} rows")
        abs_pos = torch.arange(start, start + n, device=device)
        if iv.positions is not None:
            wanted = as_index(iv.positions, device)
            abs_pos = abs_pos[torch.isin(abs_pos, wanted)]

        if isinstance(iv.source, _CacheSource):
            ref_full = _pos_major(comp.hook_name, iv.source.get(comp.hook_name))
            n_ref = ref_full.shape[1]
            absent = abs_pos[abs_pos >= n_ref]
            if len(absent):
                if iv.missing == "error":
                    raise MissingPositionError(
                        f"intervention on {comp}: '{comp.hook_name}' needs {kind} position(s) "
                        f"{absent.tolist()[:5]}{'...' if len(absent) > 5 else ''} but the reference has "
                        f"{n_ref} (0-{n_ref - 1}); record the reference over enough tokens/frames, restrict "
                        f"positions=, or pass missing='keep' to leave those positions unpatched"
                    )
                abs_pos = abs_pos[abs_pos < n_ref]
            ref = ref_full[:, abs_pos.to(ref_full.device)].to(device=device, dtype=act.dtype)
            if pattern_site:
                # Keys: the run may see fewer than the reference (a cached decoder step sees the tokens so far).
                n_key = act.shape[-1]
                if ref.shape[-1] < n_key:
                    raise MissingPositionError(
                        f"intervention on {comp}: the run attends over {n_key} keys, the reference pattern has "
                        f"{ref.shape[-1]}; record the reference over at least as many tokens/frames"
                    )
                ref = ref[..., :n_key]
        else:
            const = iv.source.get(comp.hook_name)
            ref = None if const is None else const.to(device=device, dtype=act.dtype).unsqueeze(1)
            if ref is not None and pattern_site:
                ref = ref[..., : act.shape[-1]]
        if len(abs_pos) == 0 or len(rows) == 0:
            return None
        local = abs_pos - start
        if ref is not None and ref.shape[0] not in (1, len(rows)):
            raise ValueError(
                f"intervention on {comp}: the reference has batch {ref.shape[0]} but it applies to "
                f"{len(rows)} rows; use a batch-1 reference or one row per selected row"
            )
        r, p = rows[:, None], local[None, :]
        orig = act[r, p] if comp.head is None else act[r, p, comp.head]
        if ref is None:
            target = torch.zeros_like(orig)
        else:
            target = ref if comp.head is None else ref[:, :, comp.head]
            target = target.expand_as(orig)
        new = act.clone()
        value = target if alpha == 1.0 else (1.0 - alpha) * orig + alpha * target
        if comp.head is None:
            new[r, p] = value
        else:
            new[r, p, comp.head] = value
        return _pos_major(comp.hook_name, new)

    return fn


# ---- factories --------------------------------------------------------------------------
def interpolate(
    component: str | Component,
    reference: Mapping[str, torch.Tensor],
    alpha: float = 1.0,
    *,
    rows: Sequence[int] | None = None,
    positions: Sequence[int] | range | None = None,
    missing: MissingPolicy = "error",
) -> Intervention:
    """``a~ = (1 - alpha) a + alpha a_ref`` with ``a_ref`` from a recorded reference cache."""
    return Intervention(component, _CacheSource(reference), alpha, rows, positions, missing, "interpolate")


def patch(
    component: str | Component,
    reference: Mapping[str, torch.Tensor],
    *,
    rows: Sequence[int] | None = None,
    positions: Sequence[int] | range | None = None,
    missing: MissingPolicy = "error",
) -> Intervention:
    """``a~ = a_ref``: replace the component's activation by the recorded one."""
    return Intervention(component, _CacheSource(reference), 1.0, rows, positions, missing, "patch")


def zero_ablate(
    component: str | Component,
    *,
    alpha: float = 1.0,
    rows: Sequence[int] | None = None,
    positions: Sequence[int] | range | None = None,
) -> Intervention:
    """``a~ = (1 - alpha) a`` (``alpha = 1``: the component contributes nothing)."""
    return Intervention(component, _ConstantSource(None), alpha, rows, positions, "error", "zero")


def mean_ablate(
    component: str | Component,
    means: Mapping[str, torch.Tensor],
    *,
    alpha: float = 1.0,
    rows: Sequence[int] | None = None,
    positions: Sequence[int] | range | None = None,
) -> Intervention:
    """``a~ = (1 - alpha) a + alpha mean(a)`` with means from :func:`mean_activations`."""
    return Intervention(component, _ConstantSource(means), alpha, rows, positions, "error", "mean")


# ---- applying ---------------------------------------------------------------------------
def intervention_hooks(
    model: Any, interventions: Iterable[Any], tracker: PositionTracker | None = None
) -> tuple[list[tuple[str, HookFn]], PositionTracker]:
    """``(fwd_hooks, tracker)`` for ``model.hooks(fwd_hooks=...)`` / ``run_with_hooks``.

    ``interventions``: :class:`Intervention` or :class:`~hooked_asr.patching.attention_masks.AttentionMask`
    (anything with ``.hook(model, tracker) -> (hook_name, fn)``).

    The tracker's own hooks come first so that every intervention hook sees the current
    position. Interventions on the same hook compose in the order given.
    """
    tracker = tracker or PositionTracker(model)
    hooks = [iv.hook(model, tracker) for iv in interventions]
    return tracker.hooks() + hooks, tracker


@contextlib.contextmanager
def patched(model: Any, interventions: Iterable[Any]) -> Iterator[PositionTracker]:
    """Context in which every forward, ``generate`` and ``transcribe`` call is intervened on.

    Hooks are removed on exit, also when the body raises.
    """
    hooks, tracker = intervention_hooks(model, interventions)
    with model.hooks(fwd_hooks=hooks):
        yield tracker


def run_with_interventions(model: Any, interventions: Iterable[Intervention], **forward_kwargs: Any) -> torch.Tensor:
    """Teacher-forced ``model(**forward_kwargs)`` with the interventions applied. A reference cache
    recorded on other decoder tokens than ``forward_kwargs``'s is refused (one prompt for both runs)."""
    interventions = list(interventions)
    for iv in interventions:
        if isinstance(getattr(iv, "source", None), _CacheSource):
            check_reference_prompt(model, forward_kwargs, iv.source.cache)
    with patched(model, interventions) as tracker:
        tracker.reset()
        return model(**forward_kwargs)


def generate_with_interventions(model: Any, interventions: Iterable[Intervention], **generate_kwargs: Any) -> Any:
    """``model.generate(**generate_kwargs)`` with the interventions live at every step."""
    with patched(model, interventions) as tracker:
        tracker.reset()
        return model.generate(**generate_kwargs)


# ---- references -------------------------------------------------------------------------
def hook_names(model: Any, comps: Iterable[str | Component]) -> list[str]:
    """The distinct hook names a list of components needs, in first-seen order."""
    return list(dict.fromkeys(parse_component(model, c).hook_name for c in comps))


@torch.no_grad()
def record_reference(model: Any, forward_kwargs: Mapping[str, Any], comps: Iterable[str | Component]) -> ReferenceCache:
    """Activations of ``model(**forward_kwargs)`` at the hooks of ``comps``, as a
    :class:`~hooked_asr.patching.references.ReferenceCache` that remembers the decoder tokens it read
    (methods refuse it against a clean run with other tokens).

    For decoder sites the reference must read the tokens the target run will see - its prompt
    and its transcript - so that positions line up:
    ``reference_inputs(model, target_kwargs, reference_audio)`` (``hooked_asr.patching``).
    """
    names = hook_names(model, comps)
    _, cache = model.run_with_cache(**forward_kwargs, names_filter=names)
    return ReferenceCache.of(
        {n: cache[n].detach() for n in names},
        decoder_tokens(forward_kwargs),
        getattr(forward_kwargs, "explicit_prompt", False),
    )


@torch.no_grad()
def mean_activations(
    model: Any, forward_kwargs_list: Iterable[Mapping[str, Any]], comps: Iterable[str | Component]
) -> dict[str, Float[torch.Tensor, "1 ..."]]:
    """Mean activation over every item and position of a reference set, per hook.

    ``mean[h] = sum_{items, batch, pos} a / count``, shape ``[1, *feature_shape]`` (for
    ``hook_z``: ``[1, head, d_head]``; for a pattern, over batch and queries: ``[1, head, k_pos]``),
    so items of different lengths average correctly.
    """
    names = hook_names(model, comps)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for kwargs in forward_kwargs_list:
        _, cache = model.run_with_cache(**kwargs, names_filter=names)
        for n in names:
            a = _pos_major(n, cache[n]).double()
            if is_pattern_site(n) and n in sums and a.shape[-1] != sums[n].shape[-1]:
                raise ValueError(
                    f"mean of '{n}': items attend over {sums[n].shape[-1]} and {a.shape[-1]} keys; "
                    "a mean pattern needs inputs of one length"
                )
            sums[n] = sums.get(n, 0) + a.sum(dim=(0, 1))
            counts[n] = counts.get(n, 0) + a.shape[0] * a.shape[1]
    if not counts:
        raise ValueError("mean_activations needs at least one reference input")
    return {n: (sums[n] / counts[n]).float()[None] for n in names}


__all__ = [
    "Intervention",
    "as_index",
    "attention_site",
    "is_pattern_site",
    "MissingPositionError",
    "PositionTracker",
    "generate_with_interventions",
    "hook_names",
    "intervention_hooks",
    "interpolate",
    "mean_activations",
    "mean_ablate",
    "patch",
    "patched",
    "position_kind",
    "record_reference",
    "run_with_interventions",
    "zero_ablate",
]
