"""Extraction: run a model over a labelled dataset and write pooled activations to a store.

Shard ``k`` holds items ``[k * shard_size, (k + 1) * shard_size)``; items are batched
only within a shard, so a shard's contents do not depend on how many processes wrote the
store. Under ``torch.distributed`` (``torchrun``; gloo on CPU, nccl on GPUs) rank ``r``
of ``W`` writes shards ``k`` with ``k % W == r``; rank 0 writes the manifest after a
barrier. Memory is bounded by one shard of pooled rows plus one batch of activations.

Rows come from :func:`~hooked_asr.activations.rows.pooled_rows`, the pipeline monitors use
too: encoder hooks from the encoder pass (``mean`` over the audio frames, or every audio
frame with ``none``); decoder hooks from a teacher-forced pass over the prompt, the greedy
transcript (``max_new_tokens``) and the end-of-text token; ``final`` keeps the end-of-text
position.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hooked_asr.activations.pooling import default_pooling, normalise_pooling
from hooked_asr.activations.rows import pooled_rows
from hooked_asr.activations.store import (
    MANIFEST,
    ActivationStore,
    ContentHasher,
    StoreError,
    check_shard_content,
    finished_shard_meta,
    remove_dead_writers_temp_files,
    shard_name,
    spec_hash,
    write_manifest,
    write_shard,
)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _item(dataset: Sequence[Any], i: int) -> dict[str, Any]:
    item = dataset[i]
    if isinstance(item, np.ndarray):
        item = {"audio": item}
    if not isinstance(item, Mapping) or "audio" not in item:
        raise TypeError(
            f"dataset[{i}] must be a dict with an 'audio' key (1-D float array at 16 kHz), got {type(item).__name__}"
        )
    return dict(item)


def _split_labels(item: dict[str, Any]) -> tuple[dict[str, float | int], dict[str, Any]]:
    """Numeric scalars become label tensors; everything else (str, lists) goes in the header."""
    numeric, meta = {}, {}
    for k, v in item.items():
        if k == "audio":
            continue
        if isinstance(v, (bool, int, float, np.integer, np.floating)) and not isinstance(v, str):
            numeric[k] = v
        else:
            meta[k] = v if isinstance(v, (str, list, dict, type(None))) else str(v)
    return numeric, meta


def _run_batch(
    model: Any,
    clips: list[np.ndarray],
    pooling: dict[str, str],
    language: str | None,
    max_new_tokens: int,
) -> tuple[dict[str, list[torch.Tensor]], list[dict[str, Any]]]:
    """Pooled rows per hook (one tensor per clip) and per-clip transcript info."""
    # The dataset decided what it holds (its loader has allow_silence), so silence is not refused twice.
    got = pooled_rows(model, clips, pooling, language=language, max_new_tokens=max_new_tokens, allow_silence=True)
    rows = {h: got.rows[(h, rule)] for h, rule in pooling.items()}
    if got.results is None:
        return rows, [{} for _ in clips]
    info = [{"transcript": r.text, "tokens": list(r.tokens), "finished": bool(r.finished)} for r in got.results]
    return rows, info


def resolve_pooling(model: Any, hook_names: Sequence[str], pooling: str | Mapping[str, str] | None) -> dict[str, str]:
    """One pooling rule per hook (validated against the model's hook names)."""
    if not hook_names:
        raise ValueError("hook_names is empty: name at least one hook, e.g. 'encoder.blocks.0.hook_resid_post'")
    rules = {}
    for h in hook_names:
        model.check_hook_name(h)
        if pooling is None:
            p = default_pooling(h)
        elif isinstance(pooling, str):
            p = pooling
        else:
            p = pooling.get(h, default_pooling(h))
        rules[h] = normalise_pooling(p, h)
    return rules


def _open_store(root: Path, spec: dict[str, Any], h: str) -> None:
    """Refuse a directory holding another store; drop what a killed writer left; write the manifest."""
    mpath = root / MANIFEST
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old.get("spec_hash") != h:
            diff = {k: (old.get("spec", {}).get(k), v) for k, v in spec.items() if old.get("spec", {}).get(k) != v}
            raise StoreError(
                f"{root} holds a store built with other settings ({diff}; (old, new)); use another out_dir "
                "or delete that one"
            )
    remove_dead_writers_temp_files(root)  # left by killed writers; a live writer keeps its own
    write_manifest(root, spec, spec["n_items"], spec["shard_size"])


def _label_tensors(numeric: list[dict[str, Any]], lo: int) -> dict[str, torch.Tensor]:
    """``label/<key>`` tensors: long when every value is an integer, else float64."""
    out = {}
    for key in sorted({k for n in numeric for k in n}):
        missing = [lo + j for j, n in enumerate(numeric) if key not in n]
        if missing:
            raise ValueError(f"label {key!r} is missing from items {missing[:5]}; every item needs the same labels")
        vals = [n[key] for n in numeric]
        is_int = all(isinstance(v, (bool, int, np.integer)) for v in vals)
        out[f"label/{key}"] = torch.tensor(vals, dtype=torch.long if is_int else torch.float64)
    return out


def _row_tensors(hook: str, parts: list[torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    """A hook's rows and, per row, its item and position within the item."""
    counts = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
    return {
        f"act/{hook}": torch.cat(parts),
        f"n_rows/{hook}": counts,
        f"row_item/{hook}": torch.arange(lo, hi).repeat_interleave(counts),
        f"row_pos/{hook}": torch.cat([torch.arange(int(c)) for c in counts]),
    }


def _extract_shard(
    model: Any,
    dataset: Sequence[Any],
    index: range,
    rules: dict[str, str],
    batch_size: int,
    language: str | None,
    max_new_tokens: int,
    dtype: torch.dtype,
    bar: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header of the shard holding items ``index``, batch by batch."""
    lo, hi = index.start, index.stop
    rows: dict[str, list[torch.Tensor]] = {hk: [] for hk in rules}
    items_meta, numeric, n_samples = [], [], []
    content = ContentHasher()
    for b0 in range(lo, hi, batch_size):
        items = [_item(dataset, i) for i in range(b0, min(hi, b0 + batch_size))]
        for it in items:
            content.update(it)
        clips = [np.asarray(it["audio"], dtype=np.float32) for it in items]
        pooled, info = _run_batch(model, clips, rules, language, max_new_tokens)
        for hk in rules:
            rows[hk] += [r.to("cpu", dtype) for r in pooled[hk]]
        for it, inf in zip(items, info):
            num, meta = _split_labels(it)
            numeric.append(num)
            items_meta.append({**meta, **inf})
        n_samples += [len(c) for c in clips]
        bar.update(len(items))
    tensors: dict[str, torch.Tensor] = {
        "item_index": torch.arange(lo, hi, dtype=torch.long),
        "n_samples": torch.tensor(n_samples, dtype=torch.long),
        **_label_tensors(numeric, lo),
    }
    for hk, parts in rows.items():
        tensors.update(_row_tensors(hk, parts, lo, hi))
    n_rows = {hk: int(tensors[f"n_rows/{hk}"].sum()) for hk in rows}
    meta = {
        "item_range": json.dumps([lo, hi]),
        "rows": json.dumps(n_rows),
        "items": json.dumps(items_meta),
        "content_hash": content.hexdigest(),
    }
    return tensors, meta


def extract_activations(
    model: Any,
    dataset: Sequence[Any],
    hook_names: Sequence[str],
    out_dir: str | Path,
    pooling: str | Mapping[str, str] | None = None,
    shard_size: int = 256,
    batch_size: int = 8,
    language: str | None = "en",
    max_new_tokens: int = 96,
    dataset_id: str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> ActivationStore | None:
    """Extract ``hook_names`` over ``dataset`` into a sharded store at ``out_dir``; resumable.

    ``dataset[i]`` is a dict with ``audio`` (1-D float32 at 16 kHz) and any labels: numeric
    scalars are stored as ``label/<key>`` tensors, strings in the shard header. ``pooling``:
    one rule for all hooks, a dict per hook, or ``None`` (encoder ``mean``, decoder ``final``).
    Rerunning with the same arguments skips the shards already written; other arguments on
    the same directory raise :class:`StoreError`. Under ``torch.distributed`` every rank calls
    this with the same arguments; rank 0 returns the store, other ranks ``None``.
    """
    rank, world = _dist()
    if shard_size <= 0 or batch_size <= 0:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")
    root = Path(out_dir)
    rules = resolve_pooling(model, hook_names, pooling)
    n_items = len(dataset)
    if n_items == 0:
        raise ValueError("the dataset is empty")
    spec = {
        "hooks": rules,
        "model": getattr(model.cfg, "name", type(model).__name__),
        "n_layers": model.n_layers,
        "dataset": dataset_id or getattr(dataset, "dataset_id", None) or f"{type(dataset).__name__}[{n_items}]",
        "n_items": n_items,
        "shard_size": shard_size,
        "language": language,
        "max_new_tokens": max_new_tokens,
        "dtype": str(dtype).replace("torch.", ""),
    }
    h = spec_hash(spec)
    root.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _open_store(root, spec, h)
    _barrier()

    n_shards = math.ceil(n_items / shard_size)
    mine = [k for k in range(n_shards) if k % world == rank]
    todo = []
    for k in mine:
        done = finished_shard_meta(root / shard_name(k), k, h)
        if done is None:
            todo.append(k)
        else:  # a finished shard is reused only for the same data (audio and labels)
            check_shard_content(
                root / shard_name(k),
                done,
                [_item(dataset, i) for i in range(k * shard_size, min(n_items, (k + 1) * shard_size))],
            )
    bar = tqdm(
        total=sum(min(shard_size, n_items - k * shard_size) for k in todo),
        disable=not progress,
        desc=f"extract[{rank}/{world}]" if world > 1 else "extract",
        unit="clip",
    )
    for k in todo:
        lo, hi = k * shard_size, min(n_items, (k + 1) * shard_size)
        tensors, meta = _extract_shard(
            model, dataset, range(lo, hi), rules, batch_size, language, max_new_tokens, dtype, bar
        )
        write_shard(root / shard_name(k), tensors, {"spec_hash": h, "shard": str(k), **meta})
        if world == 1:
            write_manifest(root, spec, n_items, shard_size)  # the manifest follows every finished shard
    bar.close()
    _barrier()
    if rank == 0:
        write_manifest(root, spec, n_items, shard_size)
        return ActivationStore(root)
    return None


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    gloo on CPU, nccl when CUDA is available (each rank takes GPU ``LOCAL_RANK``).
    Without those variables nothing happens and ``(0, 1)`` is returned.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


__all__ = ["extract_activations", "init_distributed", "resolve_pooling"]
