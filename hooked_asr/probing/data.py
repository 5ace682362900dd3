"""What a probe is trained on: validated features ``X [n, d]`` and labels ``y [n]``, the task
they imply, and the stratified held-out split every layer of a sweep shares."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch


Task = Literal["classification", "regression"]


def as_features(X: Any, what: str = "X") -> torch.Tensor:
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if X.ndim != 2:
        raise ValueError(f"{what} must be [n_items, d] (one pooled vector per item), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} has no rows")
    if not X.is_floating_point():
        X = X.double()
    bad = ~torch.isfinite(X)
    if bad.any():
        rows = bad.any(1).nonzero()[:, 0].tolist()
        raise ValueError(
            f"{what} has {int(bad.sum())} non-finite values (NaN/inf) in {len(rows)} rows (first: {rows[:5]}); "
            "check the activations (fp16 overflow?) or drop those items"
        )
    return X


def as_labels(y: Any, n: int) -> tuple[np.ndarray, bool]:
    """Labels as a 1-D numpy array, and whether they are numeric."""
    if isinstance(y, torch.Tensor):
        arr = y.detach().cpu().numpy()
    else:
        arr = np.asarray(list(y) if not isinstance(y, np.ndarray) else y)
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per item), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"y has {arr.shape[0]} labels but X has {n} rows: one label per item")
    numeric = arr.dtype.kind in "biuf"
    if numeric and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"y has {int((~np.isfinite(arr)).sum())} non-finite labels")
    return arr, numeric


def resolve_task(task: str, arr: np.ndarray, numeric: bool) -> Task:
    if task == "auto":
        return "regression" if numeric and arr.dtype.kind == "f" else "classification"
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if task == "regression" and not numeric:
        raise ValueError("regression needs numeric labels")
    return task  # type: ignore[return-value]


def to_python(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def stratified_split(
    labels: Any, test_size: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``. With ``stratify``, each class puts
    ``round(test_size * n_c)`` items (at least one, at most ``n_c - 1``) in the test split."""
    arr = np.asarray(labels)
    n = arr.shape[0]
    if not 0 <= test_size < 1:
        raise ValueError(f"test_size must be in [0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    if test_size == 0:
        return np.sort(rng.permutation(n)), np.array([], dtype=np.int64)
    if not stratify:
        perm = rng.permutation(n)
        n_test = int(np.floor(test_size * n + 0.5))
        if n_test < 1 or n - n_test < 2:
            raise ValueError(f"{n} items are too few for a held-out split with test_size={test_size}")
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    train, test = [], []
    for c in sorted(set(arr.tolist()), key=str):
        idx = np.nonzero(arr == c)[0]
        if len(idx) < 2:
            raise ValueError(
                f"class {c!r} has {len(idx)} item; a held-out split (test_size={test_size}) needs at least 2 per "
                "class (one to train on, one to test): add items or pass test_size=0"
            )
        idx = rng.permutation(idx)
        k = min(max(1, int(np.floor(test_size * len(idx) + 0.5))), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


__all__ = ["Task", "as_features", "as_labels", "resolve_task", "stratified_split", "to_python"]
