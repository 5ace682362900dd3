"""Extraction: run a model over a labelled dataset and write pooled activations to a store.

Shard ``k`` holds items ``[k * shard_size, (k + 1) * shard_size)``; items are batched
only within a shard, so a shard's contents do not depend on how many processes wrote the
store. Under ``torch.distributed`` (``torchrun``; gloo on CPU, nccl on GPUs) rank ``r``
of ``W`` writes shards ``k`` with ``k % W == r``; rank 0 writes the manifest after a
barrier. Memory is bounded by one shard of pooled rows plus one batch of activations.

Encoder hooks are read from the encoder pass (``mean`` over the audio frames, or every
audio frame with ``none``). Decoder hooks need a token sequence: the model transcribes
each clip greedily (``max_new_tokens``), then the decoder reads the prompt, transcript
and end-of-text token teacher-forced; ``final`` keeps the end-of-text position.
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

from hooked_asr.activations.pooling import (
    audio_frames,
    default_pooling,
    flatten_positions,
    normalise_pooling,
    pool,
    window_samples,
)
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
        raise TypeError(f"dataset[{i}] must be a dict with an 'audio' key (1-D float array at 16 kHz), got {type(item).__name__}")
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


class _Capture:
    """Forward hooks that keep the latest activation of each hook (detached)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.acts: dict[str, torch.Tensor] = {}

    def hooks(self) -> list[tuple[str, Any]]:
        def grab(x: torch.Tensor, hook: Any) -> None:
            self.acts[hook.name] = x.detach()

        return [(n, grab) for n in self.names]


def _decoder_sequences(model: Any, results: Sequence[Any], max_new_tokens: int) -> tuple[torch.Tensor, list[int]]:
    """Rows ``prompt + transcript + eos`` padded with eos; returns ids and each row's length."""
    eos = model.cfg.eos_token_id
    seqs = [list(r.prompt) + list(r.tokens) + [eos] for r in results]
    lengths = [len(s) for s in seqs]
    width = max(lengths)
    ids = torch.full((len(seqs), width), eos, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
    return ids, lengths


@torch.no_grad()
def _run_batch(
    model: Any,
    clips: list[np.ndarray],
    pooling: dict[str, str],
    language: str | None,
    max_new_tokens: int,
) -> tuple[dict[str, list[torch.Tensor]], list[dict[str, Any]]]:
    """Pooled rows per hook (one tensor per clip) and per-clip transcript info."""
    is_whisper = hasattr(model, "sot_sequence")
    enc_names = [h for h in pooling if h.startswith("encoder.")]
    dec_names = [h for h in pooling if not h.startswith("encoder.")]
    regroups = not is_whisper or (language is None and getattr(model.cfg, "is_multilingual", False))
    if dec_names and regroups and len(clips) > 1:
        # transcribe() may split this batch into groups (per detected language, per audio
        # length) and run the encoder once per group; the capture below keeps one encoder
        # pass, so such a batch is run clip by clip.
        out: dict[str, list[torch.Tensor]] = {h: [] for h in pooling}
        info: list[dict[str, Any]] = []
        for clip in clips:
            o, i = _run_batch(model, [clip], pooling, language, max_new_tokens)
            for h in pooling:
                out[h] += o[h]
            info += i
        return out, info
    feats = model.prepare_features(list(clips))
    out: dict[str, list[torch.Tensor]] = {}
    info: list[dict[str, Any]] = [{} for _ in clips]
    n_samples = [len(c) for c in clips]

    enc = _Capture(enc_names + (["encoder.hook_out"] if dec_names and is_whisper else []))
    with model.hooks(fwd_hooks=enc.hooks()):
        if dec_names:
            # Whisper takes the features directly; other models re-prepare (they need their masks).
            audio_in = feats["input_features"] if is_whisper else list(clips)
            results = model.transcribe(audio_in, language=language, max_new_tokens=max_new_tokens)
        else:
            model.encode(**feats)
    for h in enc.names:
        if h in enc.acts and enc.acts[h].shape[0] != len(clips):
            raise RuntimeError(f"{h!r} captured a batch of {enc.acts[h].shape[0]} for {len(clips)} clips: the encoder "
                               "ran in groups; extract with batch_size=1")
    for h in enc_names:
        x = flatten_positions(enc.acts[h], h)
        lengths = [audio_frames(n, x.shape[1], window_samples(model)) for n in n_samples]
        out[h] = pool(x, lengths, pooling[h])

    if dec_names:
        for b, r in enumerate(results):
            info[b] = {"transcript": r.text, "tokens": list(r.tokens), "finished": bool(r.finished)}
        dec = _Capture(dec_names)
        if is_whisper:
            # Whisper: one batched teacher-forced pass over the encoder output already computed.
            # The decoder is causal, so the eos padding after a row's end changes nothing before it.
            ids, lengths = _decoder_sequences(model, results, max_new_tokens)
            with model.hooks(fwd_hooks=dec.hooks()):
                model(decoder_input_ids=ids.to(enc.acts["encoder.hook_out"].device),
                      encoder_hidden_states=enc.acts["encoder.hook_out"])
            for h in dec_names:
                out[h] = pool(flatten_positions(dec.acts[h], h), lengths, pooling[h])
        else:
            # Any other model: one teacher-forced forward per clip through the public API.
            for h in dec_names:
                out[h] = []
            for clip, r in zip(clips, results):
                tf = model.teacher_forced_inputs(clip, continuation=list(r.tokens) + [model.cfg.eos_token_id])
                with model.hooks(fwd_hooks=dec.hooks()):
                    model(**tf.kwargs)
                for h in dec_names:
                    x = flatten_positions(dec.acts[h], h)
                    out[h] += pool(x, [x.shape[1]], pooling[h])
    return out, info


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
        write_manifest(root, spec, n_items, shard_size)
    _barrier()

    n_shards = math.ceil(n_items / shard_size)
    mine = [k for k in range(n_shards) if k % world == rank]
    todo = []
    for k in mine:
        done = finished_shard_meta(root / shard_name(k), k, h)
        if done is None:
            todo.append(k)
        else:  # a finished shard is reused only for the same data (audio and labels)
            check_shard_content(root / shard_name(k), done,
                                [_item(dataset, i) for i in range(k * shard_size, min(n_items, (k + 1) * shard_size))])
    bar = tqdm(total=sum(min(shard_size, n_items - k * shard_size) for k in todo), disable=not progress,
               desc=f"extract[{rank}/{world}]" if world > 1 else "extract", unit="clip")
    for k in todo:
        lo, hi = k * shard_size, min(n_items, (k + 1) * shard_size)
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
        }
        for key in sorted({k for n in numeric for k in n}):
            missing = [lo + j for j, n in enumerate(numeric) if key not in n]
            if missing:
                raise ValueError(f"label {key!r} is missing from items {missing[:5]}; every item needs the same labels")
            vals = [n[key] for n in numeric]
            is_int = all(isinstance(v, (bool, int, np.integer)) for v in vals)
            tensors[f"label/{key}"] = torch.tensor(vals, dtype=torch.long if is_int else torch.float64)
        n_rows = {}
        for hk, parts in rows.items():
            tensors[f"act/{hk}"] = torch.cat(parts)
            counts = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
            tensors[f"n_rows/{hk}"] = counts
            tensors[f"row_item/{hk}"] = torch.arange(lo, hi).repeat_interleave(counts)
            tensors[f"row_pos/{hk}"] = torch.cat([torch.arange(int(c)) for c in counts])
            n_rows[hk] = int(counts.sum())
        meta = {"spec_hash": h, "shard": str(k), "item_range": json.dumps([lo, hi]), "rows": json.dumps(n_rows),
                "items": json.dumps(items_meta), "content_hash": content.hexdigest()}
        write_shard(root / shard_name(k), tensors, meta)
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
