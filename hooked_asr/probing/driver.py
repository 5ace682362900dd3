"""Probing a model end to end: hooks by stack, extraction into a store, a layer sweep.

>>> sweep = probe_model(model, dataset, hooks="encoder", out_dir="acts/gender")
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooked_asr.probing.sweep import ProbeSweep, probe_layers


def model_hooks(model: Any, hooks: str | Sequence[str], site: str = "resid_post") -> list[str]:
    """``"encoder"`` / ``"decoder"`` / ``"all"`` -> the residual stream after every block of
    that stack (``{stack}.blocks.{l}.hook_resid_post``); a list is checked and returned."""
    from hooked_asr.hooks import act_name

    if isinstance(hooks, str):
        stacks = {"encoder": ["encoder"], "decoder": ["decoder"], "all": ["encoder", "decoder"]}.get(hooks)
        if stacks is None:
            model.check_hook_name(hooks)
            return [hooks]
        return [act_name(site, l, s) for s in stacks for l in range(model.n_layers[s])]
    names = list(hooks)
    for h in names:
        model.check_hook_name(h)
    return names


def probe_model(
    model: Any,
    dataset: Sequence[Any],
    hooks: str | Sequence[str] = "encoder",
    label_key: str = "label",
    out_dir: str | Path | None = None,
    pooling: str | Mapping[str, str] | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    language: str | None = "en",
    max_new_tokens: int = 96,
    dataset_id: str | None = None,
    progress: bool = True,
    **probe_kwargs: Any,
) -> ProbeSweep:
    """Extract ``hooks`` over ``dataset`` with :func:`~hooked_asr.activations.extract_activations`
    (resumable: rerunning with the same ``out_dir`` reuses finished shards), then
    :func:`probe_layers` on ``label_key``. ``out_dir=None`` uses a temporary directory."""
    from hooked_asr.activations import extract_activations

    names = model_hooks(model, hooks)
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="hooked_asr_probe_")
    store = extract_activations(
        model,
        dataset,
        names,
        out_dir,
        pooling=pooling,
        shard_size=shard_size,
        batch_size=batch_size,
        language=language,
        max_new_tokens=max_new_tokens,
        dataset_id=dataset_id,
        progress=progress,
    )
    return probe_layers(store, hooks=names, label_key=label_key, **probe_kwargs)


__all__ = ["model_hooks", "probe_model"]
