"""Attribution patching: a first-order estimate of every patch from one backward pass.

Patching component ``c`` (alpha = 1) moves its activation from ``a`` to ``a_ref``; to first order

    m(patched_c) - m(clean)  ~=  sum_{pos, features} dm/da_c * (a_ref,c - a_c)

(for a head, the sum runs over that head's slice of ``hook_z``). One forward and one
backward give ``dm/da_c`` at every site at once, so all components and heads cost about
two forwards, against one forward per component for real patching
(:func:`patching_effects`). For interpolation with ``alpha`` the estimate scales by ``alpha``.

The gradient is taken with respect to a zero "delta" added at each site
(``a + delta``), which gives the total derivative through every later site and needs no
gradient on the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from jaxtyping import Float

from hooked_asr.patching.components import Component, parse_component
from hooked_asr.patching.interventions import hook_names, position_kind
from hooked_asr.patching.references import reference_cache
from hooked_asr.patching.sweeps import patched_values

Metric = Callable[[Float[torch.Tensor, "batch pos d_vocab"]], Float[torch.Tensor, "batch"]]


def _frame(comps: list[Component], values: list[float], column: str) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {"component": c.name, column: v, "stack": c.stack, "layer": c.layer, "kind": c.kind, "head": c.head}
            for c, v in zip(comps, values)
        ]
    )


def attribution_patching(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Any,
    comps: Iterable[str | Component],
    metric: Metric,
    reference_is_cache: bool | None = None,
) -> Any:
    """Estimated ``metric(patched) - metric(clean)`` for each component (DataFrame column ``attribution``).

    ``target_kwargs``: the teacher-forced forward's inputs (``tf.kwargs``); ``reference``: the
    reference audio (run with the clean prompt and tokens), its inputs teacher-forced on the same
    tokens, or a cache from :func:`record_reference` (told apart by their keys;
    ``reference_is_cache`` forces one reading). A reference whose decoder tokens differ from the
    clean run's is refused (:func:`~hooked_asr.patching.references.reference_cache`). ``metric`` maps
    logits to one value per batch row; the rows are summed.
    """
    comps = [parse_component(model, c) for c in comps]
    names = hook_names(model, comps)
    for n in names:
        position_kind(n)
    ref = reference_cache(model, target_kwargs, reference, names, reference_is_cache)
    deltas: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def add_delta(act: torch.Tensor, hook: Any) -> torch.Tensor:
        d = torch.zeros_like(act, requires_grad=True)
        deltas[hook.name], acts[hook.name] = d, act.detach()
        return act + d

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, add_delta) for n in names]):
        logits = model(**target_kwargs)
        value = metric(logits).sum()
        missing = [n for n in names if n not in deltas]
        if missing:
            raise RuntimeError(f"these hooks did not fire in the forward: {missing}")
        grads = torch.autograd.grad(value, [deltas[n] for n in names], allow_unused=True)
    grad = {n: (g if g is not None else torch.zeros_like(deltas[n])) for n, g in zip(names, grads)}

    out = []
    for c in comps:
        a, r = acts[c.hook_name], ref[c.hook_name].to(acts[c.hook_name].device)
        if r.shape[1] != a.shape[1]:
            raise ValueError(
                f"'{c.hook_name}': the reference has {r.shape[1]} positions, the target {a.shape[1]}; "
                f"teacher-force the reference on the target's tokens"
            )
        prod = grad[c.hook_name] * (r - a)
        out.append(float((prod if c.head is None else prod[:, :, c.head]).sum()))
    return _frame(comps, out, "attribution")


def patching_effects(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference_cache: Mapping[str, torch.Tensor],
    comps: Iterable[str | Component],
    metric: Metric,
    batch_size: int = 16,
    alpha: float = 1.0,
) -> Any:
    """Real ``metric(patched) - metric(clean)`` per component (column ``effect``), teacher-forced:
    the sweep's batched runs (:func:`~hooked_asr.patching.sweeps.patched_values`; row ``j`` of a
    run patched at component ``j``, each run starting where its patches are)."""
    comps = [parse_component(model, c) for c in comps]
    clean, values = patched_values(
        model,
        target_kwargs,
        comps,
        metric,
        "interpolate",
        alpha,
        reference_cache=reference_cache,
        batch_size=batch_size,
    )
    return _frame(comps, [v - clean for v in values], "effect")


__all__ = ["attribution_patching", "patching_effects"]
