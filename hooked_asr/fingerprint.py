"""Fingerprints of what resumable work depends on: a model's weights, audio, options.

A resumable job (a patching sweep, SAE training, an extraction) stores these beside its
partial results and compares them before reusing anything, so that a resume with another
model, other audio or other options is refused instead of mixing two runs' numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 (32 hex digits) over every parameter and buffer: names, shapes, dtypes and bytes.
    About 0.1 s for whisper tiny, a few seconds for large; equal weights give equal hashes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        flat = t.reshape(-1).contiguous().cpu()
        h.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return h.hexdigest()[:32]


def model_identity(model: Any) -> dict[str, str]:
    """``{"name", "weights"}``: the model's configured name and :func:`weights_hash`."""
    return {
        "name": str(getattr(getattr(model, "cfg", None), "name", "") or type(model).__name__),
        "weights": weights_hash(model),
    }


def data_hash(x: Any) -> str:
    """Content hash of an input: a path's file bytes, an array's or tensor's values (float32 with
    its shape), or anything else by its JSON text. Two equal inputs give the same hash however
    they are held (a numpy array and a tensor of the same numbers agree)."""
    h = hashlib.sha256()
    if isinstance(x, (str, Path)) and Path(x).is_file():
        h.update(b"file|")
        with open(x, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(x, (torch.Tensor, np.ndarray)) or (
        isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x)
    ):
        a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        a = np.ascontiguousarray(a, dtype=np.float32)
        h.update(f"array|{a.shape}|".encode())
        h.update(a.tobytes())
    else:
        h.update(b"json|" + json.dumps(x, sort_keys=True, default=repr).encode())
    return h.hexdigest()[:32]


def tensors_hash(tensors: Mapping[str, torch.Tensor] | None) -> str | None:
    """Hash of a name -> tensor mapping (e.g. mean activations), ``None`` for ``None``."""
    if tensors is None:
        return None
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode() + b"|" + data_hash(tensors[k]).encode())
    return h.hexdigest()[:32]


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (stored, now)`` for every key whose value differs (nested dicts by dotted key)."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update({f"{k}.{kk}": v for kk, v in differences(a, b).items()})
        elif a != b:
            out[str(k)] = (a, b)
    return out


def describe_differences(diff: Mapping[str, tuple[Any, Any]], limit: int = 6) -> str:
    """``"model.name: stored 'a', now 'b'; ..."``: the model's keys first, long values shortened."""
    keys = sorted(diff, key=lambda k: (not k.startswith("model"), k))
    parts = [f"{k}: stored {_short(diff[k][0])}, now {_short(diff[k][1])}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def _short(v: Any, width: int = 48) -> str:
    r = repr(v)
    return r if len(r) <= width else r[: width - 5] + " ...]" if r[0] == "[" else r[: width - 4] + " ..."


def jsonable(x: Any) -> Any:
    """``x`` as JSON-comparable data (tuples become lists, numpy/torch scalars numbers), so that a
    fingerprint read back from a file compares equal to the one computed now."""
    return json.loads(json.dumps(x, sort_keys=True, default=_plain))


def _plain(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist() if x.numel() <= 64 else data_hash(x)
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else data_hash(x)
    return repr(x)


__all__ = [
    "data_hash",
    "describe_differences",
    "differences",
    "jsonable",
    "model_identity",
    "tensors_hash",
    "weights_hash",
]
