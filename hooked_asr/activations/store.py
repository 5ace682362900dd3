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
at most a stray ``.<name>.<pid>@<host>.tmp`` that a later run deletes once its writer is
dead (another process extracting into the same folder keeps its own). The shard files,
not the manifest, are the truth on resume: a shard whose header carries the spec's hash,
its own index and the content hash of its items is done.

The store identifies its data: every shard's header holds ``content_hash``, a SHA-256
over its items' audio (float32 bytes and shape) and every other field (labels, ids), so
rerunning an extraction on another dataset of the same length raises :class:`StoreError`
instead of returning the old rows. Reading checks the manifest (every file name is the
fixed ``shard_NNNNN.safetensors`` of its index, no duplicates, none missing from a
complete store) and each shard against it (index, item range, stored item indices,
spec and content hashes), so a swapped, copied or foreign shard is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file

from hooked_asr.activations.stream import StoreFrameSource

FORMAT = "hooked_asr.activations/1"
MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """A store directory that is missing, incomplete, or built with another spec."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


_UMASK = os.umask(0o022)
os.umask(_UMASK)
_HOST = socket.gethostname().replace(".", "-").replace("@", "-") or "host"


def _tmp_path(path: Path) -> Path:
    """``.<name>.<pid>@<host>.tmp`` beside ``path``: who writes it, so others can tell a dead writer's."""
    return path.with_name(f".{path.name}.{os.getpid()}@{_HOST}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_writers_temp_files(root: Path, max_age_s: float = 3600.0) -> list[Path]:
    """Delete ``.*.tmp`` files in ``root`` whose writer is dead: a process of this host that no
    longer runs, or (another host, or a reused pid) a file untouched for ``max_age_s`` (a live
    writer's temporary file exists only while one shard is being written). Returns what was removed."""
    removed = []
    now = time.time()
    for f in root.glob(".*.tmp"):
        pid_s, _, host = f.name[: -len(".tmp")].rsplit(".", 1)[-1].partition("@")
        pid, host = (int(pid_s) if pid_s.isdigit() else None), (host or _HOST)  # no host: an older name, local
        try:
            stale = now - f.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        local_dead = host == _HOST and pid is not None and pid != os.getpid() and not _pid_alive(pid)
        if local_dead or stale:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


class ContentHasher:
    """SHA-256 over items as extraction sees them: audio (float32, with its shape) and every other field."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, item: dict[str, Any]) -> None:
        audio = np.ascontiguousarray(np.asarray(item["audio"], dtype=np.float32))
        self._h.update(f"{audio.shape}".encode())
        self._h.update(audio.tobytes())
        rest = {k: v for k, v in item.items() if k != "audio"}
        self._h.update(json.dumps(rest, sort_keys=True, default=str).encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


def items_content_hash(items: Sequence[dict[str, Any]]) -> str:
    h = ContentHasher()
    for it in items:
        h.update(it)
    return h.hexdigest()


def finished_shard_meta(path: Path, index: int, spec_hash_: str) -> dict[str, str] | None:
    """The header of shard ``index`` if it is a finished shard of this spec, else ``None``
    (absent, damaged, another spec, a copy of another shard, or written before content hashes)."""
    meta = read_shard_metadata(path)
    if (
        meta is None
        or meta.get("spec_hash") != spec_hash_
        or meta.get("shard") != str(index)
        or "content_hash" not in meta
    ):
        return None
    return meta


def check_shard_content(path: Path, meta: dict[str, str], items: Sequence[dict[str, Any]]) -> None:
    """Raise :class:`StoreError` unless the finished shard at ``path`` was extracted from ``items``."""
    got = items_content_hash(items)
    if meta["content_hash"] != got:
        lo, hi = json.loads(meta["item_range"])
        stored_ids = [m.get("id") for m in json.loads(meta.get("items", "[]"))][:3]
        new_ids = [it.get("id") for it in items][:3]
        raise StoreError(
            f"{path.parent} holds activations of different data: {path.name} (items {lo}-{hi - 1}) was extracted from "
            f"content {meta['content_hash'][:12]} (ids {stored_ids}), this dataset gives {got[:12]} (ids {new_ids}). "
            "Use another out_dir, or delete that store to rebuild it"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a shard atomically: temporary file, fsync, then rename over the final name."""
    tmp = _tmp_path(path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.chmod(0o666 & ~_UMASK)  # safetensors writes 0600; a store is an ordinary, shareable folder
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
        meta = finished_shard_meta(root / shard_name(k), k, h)
        if meta is None:
            continue
        shards.append(
            {
                "index": k,
                "file": shard_name(k),
                "items": json.loads(meta["item_range"]),
                "rows": json.loads(meta["rows"]),
                "content_hash": meta["content_hash"],
            }
        )
    manifest = {
        "format": FORMAT,
        "spec": spec,
        "spec_hash": h,
        "n_items": n_items,
        "shard_size": shard_size,
        "n_shards": n_shards,
        "shards": shards,
        "complete": len(shards) == n_shards,
        # The data as a whole: the shards' content hashes in order (once complete).
        "content_hash": (
            hashlib.sha256("".join(sh["content_hash"] for sh in shards).encode()).hexdigest()[:32]
            if len(shards) == n_shards
            else None
        ),
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
            raise StoreError(
                f"no activation store at {self.root} (missing {MANIFEST}); build one with extract_activations"
            )
        try:
            self.manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"{mpath} is not valid JSON ({e}); rerun the extraction to rewrite it") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            got = self.manifest.get("format") if isinstance(self.manifest, dict) else type(self.manifest).__name__
            raise StoreError(f"{mpath} has format {got!r}; expected {FORMAT!r}")
        self._check_manifest(mpath)
        self._verified: set[int] = set()
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
        return (
            f"ActivationStore({str(self.root)!r}, items={self.n_items}, shards={self.n_shards}, "
            f"hooks={self.hook_names})"
        )

    def _check(self, hook_name: str) -> str:
        if hook_name not in self.spec["hooks"]:
            raise KeyError(f"hook {hook_name!r} is not in the store at {self.root}; it holds {self.hook_names}")
        return hook_name

    def _check_manifest(self, mpath: Path) -> None:
        """Every entry names its own fixed file inside the store, once; a complete store lists every shard."""
        m = self.manifest
        try:
            n_items, shard_size, n_shards = int(m["n_items"]), int(m["shard_size"]), int(m["n_shards"])
            shards = list(m["shards"])
            m["spec"]["hooks"], m["spec_hash"], m["complete"]
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{mpath} lacks or garbles {e}; rerun the extraction to rewrite it") from None
        if shard_size <= 0 or n_shards != math.ceil(n_items / shard_size):
            raise StoreError(f"{mpath}: {n_items} items in shards of {shard_size} cannot make {n_shards} shards")
        seen: set[int] = set()
        for entry in shards:
            k = entry.get("index") if isinstance(entry, dict) else None
            if not isinstance(k, int) or not 0 <= k < n_shards:
                raise StoreError(f"{mpath}: shard entry {entry!r} has no index in [0, {n_shards})")
            if entry.get("file") != shard_name(k):
                raise StoreError(
                    f"{mpath}: shard {k} names the file {entry.get('file')!r}; a store reads only its own "
                    f"{shard_name(k)} inside {self.root}"
                )
            if k in seen:
                raise StoreError(f"{mpath} lists shard {k} twice (duplicate entry)")
            seen.add(k)
            want = [k * shard_size, min(n_items, (k + 1) * shard_size)]
            if entry.get("items") != want:
                raise StoreError(f"{mpath}: shard {k} claims items {entry.get('items')}, its index gives {want}")
        if [e["index"] for e in shards] != sorted(seen):
            raise StoreError(f"{mpath}: shard entries are out of order")
        if m["complete"] and seen != set(range(n_shards)):
            raise StoreError(f"{mpath} says complete but lacks shards {sorted(set(range(n_shards)) - seen)} (missing)")

    def _shard_path(self, i: int) -> Path:
        """The file of the ``i``-th listed shard, checked once against the manifest before it is read."""
        entry = self.manifest["shards"][i]
        path = self.root / entry["file"]
        if i in self._verified:
            return path
        k, (lo, hi) = entry["index"], entry["items"]
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
                # item_index is read only once its header shape matches the shard's item count
                n_index = shapes.get("item_index", (None,))
                index = f.get_tensor("item_index") if n_index == (hi - lo,) else None
        except Exception as e:  # missing or not safetensors
            raise StoreError(
                f"{path} cannot be read as a shard ({type(e).__name__}: {e}); rerun the extraction"
            ) from None
        problems = []
        if meta.get("spec_hash") != self.manifest["spec_hash"]:
            problems.append(f"spec hash {meta.get('spec_hash')!r} != the manifest's {self.manifest['spec_hash']!r}")
        if meta.get("shard") != str(k):
            problems.append(f"it says it is shard {meta.get('shard')!r}")
        if meta.get("item_range") != json.dumps([lo, hi]):
            problems.append(f"it holds items {meta.get('item_range')}, not [{lo}, {hi}]")
        if index is None or not torch.equal(index, torch.arange(lo, hi, dtype=index.dtype)):
            problems.append("its stored item indices are not those of its place")
        if "content_hash" in entry and meta.get("content_hash") != entry["content_hash"]:
            problems.append("its content hash differs from the manifest's")
        rows = entry.get("rows") if isinstance(entry.get("rows"), dict) else {}
        for h in self.hook_names:  # sizes the manifest gives, checked against the header before any read
            got = shapes.get(f"act/{h}")
            if got is None or len(got) != 2 or got[0] != rows.get(h):
                problems.append(f"act/{h} has shape {list(got) if got else None}, the manifest says {rows.get(h)} rows")
        if problems:
            raise StoreError(
                f"{path} does not belong at shard {k} of {self.root}: {'; '.join(problems)}. A shard was swapped, "
                "copied or replaced; rerun the extraction into a fresh folder"
            )
        self._verified.add(i)
        return path

    @property
    def content_hash(self) -> str | None:
        """Hash of the data the store was extracted from (audio and labels of every item), once complete."""
        return self.manifest.get("content_hash")

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
            return sorted(k[len("label/") :] for k in f.keys() if k.startswith("label/"))

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
        self,
        hook_name: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
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
        """The rows of ``hook_name`` in shard ``i`` (float32)."""
        with safe_open(str(self._shard_path(i)), framework="pt") as f:
            return f.get_tensor(f"act/{self._check(hook_name)}").float()

    def frame_source(self, hook_name: str) -> StoreFrameSource:
        """A resumable stream of ``hook_name``'s rows, one chunk per shard (e.g. SAE training data)."""
        return StoreFrameSource(self, self._check(hook_name))


__all__ = [
    "ActivationStore",
    "ContentHasher",
    "StoreError",
    "check_shard_content",
    "finished_shard_meta",
    "items_content_hash",
    "remove_dead_writers_temp_files",
    "shard_name",
    "spec_hash",
    "write_manifest",
    "write_shard",
]
