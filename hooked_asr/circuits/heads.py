"""Per-head results, computed on demand from ``hook_z`` and ``W_O`` (``hook_result`` need not be cached).

For attention ``{stack}.blocks.{l}.{kind}`` (``kind`` = ``attn`` or ``cross_attn``) and head ``h``::

    result_h = z_h W_O[h]                    [batch, pos, d_model]
    hook_attn_out (or hook_cross_attn_out) = sum_h result_h + b_O

so a head's result is exactly what patching ``...{kind}.head.{h}`` (a slice of ``hook_z``)
changes in the residual stream. Heads are labelled with the sweep's component strings
(``decoder.blocks.3.cross_attn.head.2``, parsed by :mod:`hooked_asr.patching.components`),
so a DLA table and a patching sweep line up row for row. Grouped-query attention needs
nothing special here: ``z`` and ``W_O`` are per query head.

``cache`` is the dict of ``run_with_cache`` or an :class:`hooked_asr.ActivationCache` (whose
``head_results`` / ``stack_head_results`` these call: one implementation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from jaxtyping import Float

from hooked_asr import ActivationCache
from hooked_asr.patching.components import Component, components, parse_component


def z_name(stack: str, layer: int, kind: str = "attn") -> str:
    """The hook whose head axis the results are computed from: ``{stack}.blocks.{l}.{kind}.hook_z``."""
    return f"{stack}.blocks.{layer}.{kind}.hook_z"


def _z(cache: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    try:
        return cache[name]
    except KeyError:
        raise KeyError(
            f"'{name}' is not in the cache: head results are computed from hook_z; run "
            f"run_with_cache with a names_filter that keeps it (e.g. lambda n: n.endswith('hook_z'))"
        ) from None


def head_results(
    model: Any, cache: Mapping[str, torch.Tensor], stack: str, layer: int, kind: str = "attn", pos_slice: Any = None
) -> Float[torch.Tensor, "batch pos head d_model"]:
    """Every head's result of one attention: ``einsum("bphd,hdm->bphm", z, W_O)``.

    Equals the opt-in ``hook_result`` (``model.set_use_attn_result(True)``) without caching it.
    ``pos_slice`` (TL ``Slice`` or its inputs) selects positions of ``z`` before the product.
    """
    return as_cache(model, cache).head_results(stack, layer, kind, pos_slice)


def as_cache(model: Any, cache: Mapping[str, torch.Tensor]) -> ActivationCache:
    """``cache`` as an :class:`ActivationCache` (a plain dict is wrapped, not copied)."""
    return cache if isinstance(cache, ActivationCache) else ActivationCache(cache, model)


def head_result(
    model: Any, cache: Mapping[str, torch.Tensor], component: str | Component
) -> Float[torch.Tensor, "batch pos d_model"]:
    """One head's result ``z_h W_O[h]``, named like a sweep component (``decoder.blocks.0.cross_attn.head.3``)."""
    comp = parse_component(model, component)
    if comp.head is None or comp.kind not in ("attn", "cross_attn"):
        raise ValueError(
            f"{comp.name!r} is not an attention head; write '<stack>.blocks.<l>.<attn|cross_attn>.head.<h>'"
        )
    W_O = model.attn_weight("W_O", comp.stack, comp.layer, comp.kind)[comp.head]
    z = _z(cache, comp.hook_name)[..., comp.head, :]
    return z.to(W_O.dtype) @ W_O


def head_components(
    model: Any, stack: str = "decoder", kinds: Iterable[str] | None = None, layer: int | None = None
) -> list[Component]:
    """Every attention head of ``stack`` as sweep components, layer by layer; within a layer
    self-attention heads first, then cross-attention heads (the forward order).

    ``kinds`` defaults to every attention kind the stack has; ``layer`` keeps the heads of
    layers strictly before it (TransformerLens's ``stack_head_results`` convention; ``None``
    or ``-1``: all).
    """
    kinds = model.attention_kinds(stack) if kinds is None else list(kinds)
    n = model.n_layers[stack]
    upto = n if layer is None or layer == -1 else layer
    if not 0 <= upto <= n:
        raise ValueError(f"layer must be in [0, {n}] (or -1 / None for all) for the {stack}, got {layer}")
    return [
        c
        for c in components(model, kinds=kinds, heads=True, stacks=(stack,), layers=range(upto))
        if c.kind in ("attn", "cross_attn")
    ]


def stack_head_results(
    model: Any,
    cache: Mapping[str, torch.Tensor],
    stack: str = "decoder",
    kinds: Iterable[str] | None = None,
    layer: int | None = None,
    pos_slice: Any = None,
) -> tuple[Float[torch.Tensor, "component batch pos d_model"], list[str]]:
    """Every head's result stacked on a leading axis, with its component label.

    Order as :func:`head_components`. Summed over one attention's heads, plus its ``b_O``,
    this is that attention's ``hook_attn_out`` / ``hook_cross_attn_out``.
    """
    return as_cache(model, cache).stack_head_results(
        -1 if layer is None else layer, return_labels=True, pos_slice=pos_slice, stack=stack, kinds=kinds
    )


__all__ = ["as_cache", "head_components", "head_result", "head_results", "stack_head_results", "z_name"]
