"""An activation store on disk: sharded safetensors plus a JSON manifest.

Layout of a store directory::

    manifest.json              spec (hooks, pooling, model, dataset), shard list, complete flag
    shard_00000.safetensors    items [0, shard_size), one file per shard
    shard_00001.safetensors    ...

Each shard holds, for every hook ``h``, ``act/h`` ``[rows, d]`` (one row per item for
``mean`` / ``final`` pooling; one row per frame or token for ``none``, with
``row_item/h`` and ``row_pos/h`` saying which item and position each row is), plus per
item ``item_index``, ``n_samples``, ``n_rows/h`` and numeric labels ``label/<key>``.
String metadata (ids, text labels, transcripts) sits in the shard's safetensors header.

Writes are atomic: a shard is written to a temporary file in the same directory and
renamed (``os.replace``) once complete, and the manifest is rewritten the same way after
the shard. A shard file under its final name is therefore always whole; a crash leaves
at most a stray ``*.tmp`` that the next run deletes. The shard files, not the manifest,
are the truth on resume: a shard whose header carries the spec's hash is done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "hooked_asr.activations/1"
MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """A store directory that is missing, incomplete, or built with another spec."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a shard atomically: temporary file, fsync, then rename over the final name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_shard_metadata(path: Path) -> dict[str, str] | None:
    """The header metadata of a shard, or ``None`` if the file is not a readable shard."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # a foreign or damaged file: treated as absent and rewritten
        return None


def write_manifest(root: Path, spec: dict[str, Any], n_items: int, shard_size: int) -> dict[str, Any]:
    """Rebuild the manifest from the shard files on disk (the truth) and write it atomically."""
    h = spec_hash(spec)
    n_shards = max(1, math.ceil(n_items / shard_size)) if n_items else 0
    shards = []
    for k in range(n_shards):
        meta = read_shard_metadata(root / shard_name(k))
        if meta is None or meta.get("spec_hash") != h:
            continue
        shards.append({"index": k, "file": shard_name(k), "items": json.loads(meta["item_range"]),
                       "rows": json.loads(meta["rows"])})
    manifest = {
        "format": FORMAT,
        "spec": spec,
        "spec_hash": h,
        "n_items": n_items,
        "shard_size": shard_size,
        "n_shards": n_shards,
        "shards": shards,
        "complete": len(shards) == n_shards,
    }
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


class ActivationStore:
    """Read a store shard by shard; nothing is loaded until asked for.

    >>> store = ActivationStore("acts/gender")
    >>> X = store.load("encoder.blocks.3.hook_resid_post")        # [n_items, d] (pooled hooks)
    >>> y = store.labels("label")                                  # [n_items]
    >>> for batch in store.iter_batches("encoder.blocks.2.hook_resid_post", 4096, shuffle=True):
    ...     ...                                                    # frames, one shard in memory
    """

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.root = Path(path)
        mpath = self.root / MANIFEST
        if not mpath.exists():
            raise StoreError(f"no activation store at {self.root} (missing {MANIFEST}); build one with extract_activations")
        self.manifest = json.loads(mpath.read_text())
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{mpath} has format {self.manifest.get('format')!r}; expected {FORMAT!r}")
        if not self.manifest["complete"] and not allow_incomplete:
            done, total = len(self.manifest["shards"]), self.manifest["n_shards"]
            raise StoreError(
                f"the store at {self.root} is incomplete ({done} of {total} shards): rerun the same extraction "
                "to resume it, or pass allow_incomplete=True to read the finished shards"
            )

    # ---- description -----------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    @property
    def hook_names(self) -> list[str]:
        return list(self.spec["hooks"])

    @property
    def n_items(self) -> int:
        return sum(s["items"][1] - s["items"][0] for s in self.manifest["shards"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def pooling(self, hook_name: str) -> str:
        return self.spec["hooks"][self._check(hook_name)]

    def n_rows(self, hook_name: str) -> int:
        self._check(hook_name)
        return sum(s["rows"][hook_name] for s in self.manifest["shards"])

    def d(self, hook_name: str) -> int:
        with safe_open(str(self._shard_path(0)), framework="pt") as f:
            return f.get_slice(f"act/{self._check(hook_name)}").get_shape()[1]

    def __len__(self) -> int:
        return self.n_shards

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.root)!r}, items={self.n_items}, shards={self.n_shards}, "
                f"hooks={self.hook_names})")

    def _check(self, hook_name: str) -> str:
        if hook_name not in self.spec["hooks"]:
            raise KeyError(f"hook {hook_name!r} is not in the store at {self.root}; it holds {self.hook_names}")
        return hook_name

    def _shard_path(self, i: int) -> Path:
        return self.root / self.manifest["shards"][i]["file"]

    # ---- per-item data ---------------------------------------------------------------
    def items(self) -> list[dict[str, Any]]:
        """Every item's metadata (id, string labels, transcript...) in item order."""
        out: list[dict[str, Any]] = []
        for i in range(self.n_shards):
            with safe_open(str(self._shard_path(i)), framework="pt") as f:
                out.extend(json.loads(f.metadata()["items"]))
        return out

    def label_keys(self) -> list[str]:
        with safe_open(str(self._shard_path(0)), framework="pt") as f:
            return sorted(k[len("label/"):] for k in f.keys() if k.startswith("label/"))

    def labels(self, key: str = "label") -> torch.Tensor:
        """Numeric label ``key`` of every item, ``[n_items]``."""
        return self._per_item(f"label/{key}", what=f"label {key!r}")

    def n_samples(self) -> torch.Tensor:
        return self._per_item("n_samples", what="n_samples")

    def _per_item(self, key: str, what: str) -> torch.Tensor:
        parts = []
        for i in range(self.n_shards):
            with safe_open(str(self._shard_path(i)), framework="pt") as f:
                if key not in f.keys():
                    raise KeyError(f"{what} is not in the store at {self.root}; labels: {self.label_keys()}")
                parts.append(f.get_tensor(key))
        return torch.cat(parts)

    # ---- activations -----------------------------------------------------------------
    def iter_shards(self, hook_names: Sequence[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """One shard at a time: ``{"act/<hook>": [rows, d], "row_item/<hook>": [rows], ...}``."""
        names = self.hook_names if hook_names is None else [self._check(h) for h in hook_names]
        per_hook = ("act", "row_item", "row_pos", "n_rows")
        for i in range(self.n_shards):
            with safe_open(str(self._shard_path(i)), framework="pt") as f:
                keys = [k for k in f.keys() if k.split("/", 1)[0] not in per_hook or k.split("/", 1)[1] in names]
                yield {k: f.get_tensor(k) for k in keys}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_shards()

    def load(self, hook_name: str, dtype: torch.dtype = torch.float32) -> Float[torch.Tensor, "rows d"]:
        """Every row of one hook (for pooled hooks: ``[n_items, d]`` in item order)."""
        self._check(hook_name)
        parts = []
        for i in range(self.n_shards):
            with safe_open(str(self._shard_path(i)), framework="pt") as f:
                parts.append(f.get_tensor(f"act/{hook_name}").to(dtype))
        return torch.cat(parts)

    def load_rows(self, hook_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(acts [rows, d], item index [rows], position [rows])`` for one hook."""
        self._check(hook_name)
        a, it, pos = [], [], []
        for i in range(self.n_shards):
            with safe_open(str(self._shard_path(i)), framework="pt") as f:
                a.append(f.get_tensor(f"act/{hook_name}"))
                it.append(f.get_tensor(f"row_item/{hook_name}"))
                pos.append(f.get_tensor(f"row_pos/{hook_name}"))
        return torch.cat(a), torch.cat(it), torch.cat(pos)

    def iter_batches(
        self, hook_name: str, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[Float[torch.Tensor, "batch d"]]:
        """Rows of one hook in batches, holding one shard (plus a partial batch) in memory.

        ``shuffle`` permutes the shard order and the rows within each shard (a
        shard-local shuffle: exact global shuffling would need every shard at once).
        """
        self._check(hook_name)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rng = np.random.default_rng(seed)
        order = rng.permutation(self.n_shards) if shuffle else np.arange(self.n_shards)
        carry: torch.Tensor | None = None
        for i in order:
            with safe_open(str(self._shard_path(int(i))), framework="pt") as f:
                x = f.get_tensor(f"act/{hook_name}").to(dtype)
            if shuffle:
                x = x[torch.from_numpy(rng.permutation(x.shape[0]))]
            if carry is not None:
                x = torch.cat([carry, x])
            n_full = x.shape[0] // batch_size
            for b in range(n_full):
                yield x[b * batch_size : (b + 1) * batch_size]
            carry = x[n_full * batch_size :] if x.shape[0] % batch_size else None
        if carry is not None and not drop_last:
            yield carry

    def shard_rows(self, i: int, hook_name: str) -> Float[torch.Tensor, "rows d"]:
        """The rows of ``hook_name`` in shard ``i`` (float32): one shard at a time, e.g. for an SAE
        frame source (:class:`hooked_asr.sae.frames.StoreFrameSource`)."""
        with safe_open(str(self._shard_path(i)), framework="pt") as f:
            return f.get_tensor(f"act/{self._check(hook_name)}").float()


__all__ = ["ActivationStore", "StoreError", "shard_name", "spec_hash", "write_manifest", "write_shard"]
