"""Linear probes on pooled activations, layer by layer (paper Sec 4.1-4.3).

A probe reads one vector per clip (encoder hooks: mean over the clip's audio frames;
decoder hooks: the end-of-text position; see :mod:`hooked_asr.activations.pooling`) and
asks whether a property of the clip is linearly decodable from it.

Features are standardised with the training split's statistics, ``z = (x - mu) / sigma``
(``sigma = 1`` for constant features), then:

- binary logistic regression: ``p(y = c_1 | x) = sigmoid(w . z + b)``;
- multi-class (softmax) regression: ``p(y = c_k | x) = softmax(W z + b)_k``;
- both minimise ``mean_i CE_i + (l2 / 2) ||W||_F^2`` (the bias is not penalised) by
  full-batch L-BFGS in torch, so they run on whatever device the features are on
  (large-v3's 1280-d features on a GPU included);
- linear (ridge) regression: with ``y`` standardised as well, ``w`` solves
  ``(Z^T Z / n + l2 I) w = Z^T y_s / n`` exactly (``l2 = 0``: the pseudo-inverse).

Held-out evaluation uses a stratified split (each class keeps its share of the test
set; with the same ``seed`` every layer sees the same split, so layers compare on the
same items). Metrics on the test split: accuracy, F1 (**binary F1 of the larger label**
``classes[-1]`` for two classes, e.g. label 1; **macro F1**, the unweighted mean of
per-class F1, for more), the confusion matrix (rows = true class, columns = predicted),
and the majority-class rate as the chance level.

    >>> res = fit_probe(X, y)                                   # X [n, d], y [n]
    >>> res.test_acc, res.f1, res.confusion
    >>> sweep = probe_layers(store, label_key="label")          # every hook of an ActivationStore
    >>> print(sweep.summary()); sweep.plot("acc.png"); sweep.best_layer
    >>> sweep = probe_model(model, dataset, hooks="encoder", out_dir="acts/gender")
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

Task = Literal["classification", "regression"]

DEFAULT_L2 = 1e-3


# ---- the probe ------------------------------------------------------------------------------


class LinearProbe(nn.Module):
    """Standardisation (``mean``, ``std`` buffers) followed by one linear layer.

    ``task="classification"``: ``len(classes)`` classes; the layer has one output for two
    classes (the logit of ``classes[1]``) and one per class otherwise.
    ``task="regression"``: one output, de-standardised with ``y_mean`` / ``y_std``.
    ``classes`` are the label values (ints, floats or strings), sorted.
    """

    def __init__(self, d_in: int, task: Task = "classification", classes: Sequence[Any] | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.task = task
        self.classes = list(classes) if classes is not None else []
        if task == "classification" and len(self.classes) < 2:
            raise ValueError(f"a classification probe needs at least two classes, got {self.classes}")
        self.d_in = int(d_in)
        n_out = 1 if task == "regression" or len(self.classes) == 2 else len(self.classes)
        self.linear = nn.Linear(self.d_in, n_out, dtype=dtype)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("mean", torch.zeros(self.d_in, dtype=dtype))
        self.register_buffer("std", torch.ones(self.d_in, dtype=dtype))
        self.register_buffer("y_mean", torch.zeros((), dtype=dtype))
        self.register_buffer("y_std", torch.ones((), dtype=dtype))

    # -- forward ----------------------------------------------------------------------------
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"the probe reads [n, {self.d_in}] features, got {tuple(x.shape)}")
        return x.to(device=self.mean.device, dtype=self.mean.dtype)

    def standardise(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n d"]:
        return (self._prep(x) - self.mean) / self.std

    def forward(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n k"]:
        """Logits (``[n, 1]`` for two classes, ``[n, n_classes]`` otherwise), or standardised
        predictions for regression."""
        return self.linear(self.standardise(x))

    @torch.no_grad()
    def predict_proba(self, x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n n_classes"]:
        """Class probabilities, columns in the order of ``classes``."""
        if self.task != "classification":
            raise ValueError("predict_proba is for classification probes; use predict for regression")
        logits = self(x)
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)

    @torch.no_grad()
    def predict_index(self, x: Float[torch.Tensor, "n d"]) -> torch.Tensor:
        """Index into ``classes`` of the most probable class."""
        logits = self(x)
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

    @torch.no_grad()
    def predict(self, x: Float[torch.Tensor, "n d"]) -> torch.Tensor:
        """Predicted labels (class values when numeric, class indices when ``classes`` are
        strings), or the regression value ``y_hat = (w . z + b) * y_std + y_mean``."""
        if self.task == "regression":
            return self(x)[:, 0] * self.y_std + self.y_mean
        idx = self.predict_index(x)
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.classes):
            return torch.tensor(self.classes, device=idx.device)[idx]
        return idx

    @property
    def coef(self) -> tuple[Float[torch.Tensor, "k d"], Float[torch.Tensor, " k"]]:
        """The affine map on raw (unstandardised) features: ``out = x @ W.T + b`` gives the
        logits (classification) or ``y_hat`` (regression)."""
        w = self.linear.weight.detach() / self.std
        b = self.linear.bias.detach() - w @ self.mean
        if self.task == "regression":
            w, b = w * self.y_std, b * self.y_std + self.y_mean
        return w, b

    @property
    def direction(self) -> Float[torch.Tensor, " d"]:
        """Unit vector along the probe's weight in raw feature space (first output row)."""
        w = self.coef[0][0]
        return w / w.norm().clamp_min(1e-30)

    # -- io -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"format": "hooked_asr.probe/1", "d_in": self.d_in, "task": self.task, "classes": self.classes,
                "dtype": str(self.mean.dtype).replace("torch.", "")}

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (weights + buffers, config in the header) and
        ``<path>.json`` (the config, readable). Returns the safetensors path."""
        from safetensors.torch import save_file

        path = Path(path)
        st = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
        st.parent.mkdir(parents=True, exist_ok=True)
        cfg = json.dumps(self.config())
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(st),
                  metadata={"config": cfg})
        st.with_suffix(".json").write_text(json.dumps(self.config(), indent=1))
        return st

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "LinearProbe":
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        st = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
        if not st.exists():
            raise FileNotFoundError(f"no probe at {st}")
        with safe_open(str(st), framework="pt") as f:
            cfg = json.loads((f.metadata() or {}).get("config", "{}"))
        if cfg.get("format") != "hooked_asr.probe/1":
            raise ValueError(f"{st} is not a hooked_asr probe (config {cfg})")
        probe = cls(cfg["d_in"], cfg["task"], cfg["classes"], dtype=getattr(torch, cfg["dtype"]))
        probe.load_state_dict(load_file(str(st)))
        return probe.to(device).eval()

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, task={self.task!r}, classes={self.classes}"


# ---- validation and splitting ---------------------------------------------------------------


def _as_features(X: Any, what: str = "X") -> torch.Tensor:
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


def _as_labels(y: Any, n: int) -> tuple[np.ndarray, bool]:
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


def _resolve_task(task: str, arr: np.ndarray, numeric: bool) -> Task:
    if task == "auto":
        return "regression" if numeric and arr.dtype.kind == "f" else "classification"
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if task == "regression" and not numeric:
        raise ValueError("regression needs numeric labels")
    return task  # type: ignore[return-value]


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def stratified_split(labels: Any, test_size: float = 0.2, seed: int = 0,
                     stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
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


# ---- training -------------------------------------------------------------------------------


def _standardisation(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = Z.mean(0)
    std = Z.std(0, unbiased=False)
    std = torch.where(std > 1e-8 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean, std


def train_probe(
    X: Float[torch.Tensor, "n d"],
    y: Any,
    task: Task = "classification",
    classes: Sequence[Any] | None = None,
    l2: float = DEFAULT_L2,
    max_iter: int = 500,
    tol: float = 1e-7,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LinearProbe:
    """Fit a :class:`LinearProbe` on all of ``X`` (no split; see :func:`fit_probe`).

    Classification: full-batch L-BFGS (strong Wolfe line search) on
    ``mean CE + (l2/2) ||W||^2``. Regression: the ridge normal equations, solved exactly.
    Trains in float64 on CPU and float32 on a GPU unless ``dtype`` is given.
    """
    X = _as_features(X)
    arr, numeric = _as_labels(y, X.shape[0])
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    device = torch.device(device) if device is not None else X.device
    dtype = dtype or (torch.float64 if device.type == "cpu" else torch.float32)
    Xd = X.to(device=device, dtype=dtype)
    mean, std = _standardisation(Xd)
    Z = (Xd - mean) / std
    n = Z.shape[0]

    if task == "regression":
        yt = torch.as_tensor(arr.astype(np.float64), device=device, dtype=dtype)
        y_mean, y_std = yt.mean(), yt.std(unbiased=False)
        y_std = y_std if y_std > 0 else torch.ones_like(y_std)
        ys = (yt - y_mean) / y_std
        probe = LinearProbe(Z.shape[1], "regression", dtype=dtype).to(device)
        A = Z.T @ Z / n
        rhs = Z.T @ ys / n
        if l2 > 0:
            w = torch.linalg.solve(A + l2 * torch.eye(A.shape[0], device=device, dtype=dtype), rhs)
        else:
            w = torch.linalg.pinv(A) @ rhs
        with torch.no_grad():
            probe.linear.weight.copy_(w[None])
            probe.linear.bias.zero_()  # Z and ys are centred on the training set
            probe.mean.copy_(mean), probe.std.copy_(std)
            probe.y_mean.copy_(y_mean), probe.y_std.copy_(y_std)
        return probe.eval()

    classes = list(classes) if classes is not None else sorted({_py(v) for v in arr.tolist()}, key=_sort_key)
    present = {_py(v) for v in arr.tolist()}
    if len(present) < 2:
        raise ValueError(
            f"the training labels hold a single class ({sorted(present, key=_sort_key)}): a probe needs at least two"
        )
    index = {c: i for i, c in enumerate(classes)}
    missing = [v for v in present if v not in index]
    if missing:
        raise ValueError(f"labels {missing[:5]} are not among classes {classes}")
    t = torch.tensor([index[_py(v)] for v in arr.tolist()], device=device)
    probe = LinearProbe(Z.shape[1], "classification", classes, dtype=dtype).to(device)
    with torch.no_grad():
        probe.mean.copy_(mean), probe.std.copy_(std)
    W, b = probe.linear.weight, probe.linear.bias
    binary = W.shape[0] == 1
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-3,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = Z @ W.T + b
        if binary:
            loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], t.to(dtype))
        else:
            loss = nn.functional.cross_entropy(logits, t)
        loss = loss + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe.eval()


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


# ---- metrics --------------------------------------------------------------------------------


def confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true_idx, dtype=np.int64), np.asarray(pred_idx, dtype=np.int64)), 1)
    return cm


def f1_from_confusion(cm: np.ndarray) -> float:
    """Binary F1 of the last class for 2 classes; macro F1 (unweighted mean over classes)
    otherwise. Per class ``F1 = 2 TP / (2 TP + FP + FN)`` (0 when that is 0 / 0)."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return float(f1[-1]) if cm.shape[0] == 2 else float(f1.mean())


@dataclass
class ProbeResult:
    """A trained probe and its train / held-out metrics (classification or regression)."""

    probe: LinearProbe
    task: Task
    classes: list[Any]
    n_train: int
    n_test: int
    train_acc: float = float("nan")
    test_acc: float = float("nan")
    f1: float = float("nan")
    chance: float = float("nan")
    confusion: np.ndarray | None = None  # test split, rows = true class
    train_r2: float = float("nan")
    test_r2: float = float("nan")
    train_mse: float = float("nan")
    test_mse: float = float("nan")
    train_idx: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64), repr=False)
    test_idx: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64), repr=False)

    def metrics(self) -> dict[str, Any]:
        """Scalars (and the confusion matrix as nested lists), JSON-ready."""
        out: dict[str, Any] = {"task": self.task, "n_train": self.n_train, "n_test": self.n_test}
        if self.task == "classification":
            out.update(train_acc=self.train_acc, test_acc=self.test_acc, f1=self.f1, chance=self.chance,
                       classes=[_py(c) for c in self.classes],
                       confusion=None if self.confusion is None else self.confusion.tolist())
        else:
            out.update(train_r2=self.train_r2, test_r2=self.test_r2, train_mse=self.train_mse, test_mse=self.test_mse)
        return out


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_res = float(((y - yhat) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def fit_probe(
    X: Float[torch.Tensor, "n d"],
    y: Any,
    task: str = "auto",
    test_size: float = 0.2,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    max_iter: int = 500,
    device: str | torch.device | None = None,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
    tol: float = 1e-7,
) -> ProbeResult:
    """Train a probe on a held-out split of ``(X, y)`` and score it.

    ``task="auto"``: integer, bool or string labels -> classification; float labels ->
    regression. ``split``: explicit ``(train_idx, test_idx)`` (overrides ``test_size``/``seed``).
    Raises ``ValueError`` for labels of the wrong length, non-finite features, a single
    class, or fewer than two items in a class when a test split is asked for.
    """
    X = _as_features(X)
    arr, numeric = _as_labels(y, X.shape[0])
    task_ = _resolve_task(task, arr, numeric)
    if task_ == "classification":
        classes = sorted({_py(v) for v in arr.tolist()}, key=_sort_key)
        if len(classes) < 2:
            raise ValueError(f"the labels hold a single class ({classes}): a probe needs at least two")
    if split is None:
        tr, te = stratified_split(arr, test_size, seed, stratify=task_ == "classification")
    else:
        tr, te = np.asarray(split[0], dtype=np.int64), np.asarray(split[1], dtype=np.int64)
    tr_t = torch.as_tensor(tr, device=X.device)
    te_t = torch.as_tensor(te, device=X.device)
    if task_ == "regression":
        probe = train_probe(X[tr_t], arr[tr], "regression", l2=l2, device=device)
        res = ProbeResult(probe, "regression", [], len(tr), len(te), train_idx=tr, test_idx=te)
        yhat_tr = probe.predict(X[tr_t]).double().cpu().numpy()
        res.train_mse = float(((arr[tr] - yhat_tr) ** 2).mean())
        res.train_r2 = _r2(arr[tr].astype(float), yhat_tr)
        if len(te):
            yhat_te = probe.predict(X[te_t]).double().cpu().numpy()
            res.test_mse = float(((arr[te] - yhat_te) ** 2).mean())
            res.test_r2 = _r2(arr[te].astype(float), yhat_te)
        return res

    if len({_py(v) for v in arr[tr].tolist()}) < 2:
        raise ValueError("the training split holds a single class: a probe needs at least two")
    probe = train_probe(X[tr_t], arr[tr], "classification", classes=classes, l2=l2, max_iter=max_iter,
                        tol=tol, device=device)
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[_py(v)] for v in arr.tolist()], dtype=np.int64)
    res = ProbeResult(probe, "classification", classes, len(tr), len(te), train_idx=tr, test_idx=te)
    pred_tr = probe.predict_index(X[tr_t]).cpu().numpy()
    res.train_acc = float((pred_tr == true[tr]).mean())
    if len(te):
        pred_te = probe.predict_index(X[te_t]).cpu().numpy()
        res.test_acc = float((pred_te == true[te]).mean())
        res.confusion = confusion_matrix(true[te], pred_te, len(classes))
        res.f1 = f1_from_confusion(res.confusion)
        res.chance = float(np.bincount(true[te], minlength=len(classes)).max() / len(te))
    return res


# ---- layer sweeps ---------------------------------------------------------------------------

_BLOCK = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.")


def _layer_of(key: Any) -> tuple[str | None, Any]:
    """``(stack, layer)`` for a hook name (``("encoder", 3)``), or ``(None, key)``."""
    if isinstance(key, str):
        m = _BLOCK.match(key)
        if m:
            return m.group(1), int(m.group(2))
        if key.startswith(("encoder.", "decoder.")):
            return key.split(".")[0], key.split(".", 1)[1]
    return None, key


@dataclass
class ProbeSweep:
    """One probe per layer (hook): ``rows`` of metrics, ``results`` with the probes."""

    rows: list[dict[str, Any]]
    results: dict[Any, ProbeResult]
    task: Task
    title: str = ""
    store: Any = None

    @property
    def best_layer(self) -> Any:
        """Key (layer or hook) with the highest held-out accuracy (test R^2 for regression;
        the training score when there is no test split). Ties: the earliest layer."""
        metric = self._metric()
        vals = [r[metric] for r in self.rows]
        if all(v is None or math.isnan(v) for v in vals):
            metric = "train_acc" if self.task == "classification" else "train_r2"
            vals = [r[metric] for r in self.rows]
        best = max(range(len(vals)), key=lambda i: (-math.inf if math.isnan(vals[i]) else vals[i], -i))
        return self.rows[best]["key"]

    def _metric(self) -> str:
        return "test_acc" if self.task == "classification" else "test_r2"

    def columns(self) -> list[str]:
        base = ["layer", "stack", "hook", "n_train", "n_test"]
        if self.task == "classification":
            return base + ["train_acc", "test_acc", "f1", "chance"]
        return base + ["train_r2", "test_r2", "train_mse", "test_mse"]

    def summary(self) -> str:
        """A per-layer table (as in the paper's per-layer probing tables); ``*`` marks the best."""
        cols = self.columns()
        skip = {"stack"} | ({"hook"} if all(r["hook"] is None for r in self.rows) else set())
        show = [c for c in cols if c not in skip]
        best = self.best_layer
        lines = []
        if self.title:
            lines.append(self.title)
        body = []
        for r in self.rows:
            cells = []
            for c in show:
                v = r.get(c)
                cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
            cells.append("*" if r["key"] == best else "")
            body.append(cells)
        header = show + [""]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths).rstrip())
        for b in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_csv(self, path: str | Path | None = None) -> str:
        cols = self.columns()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(r)
        text = buf.getvalue()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        data = {"title": self.title, "task": self.task, "best_layer": _jsonable(self.best_layer),
                "rows": [{k: _jsonable(v) for k, v in r.items()} for r in self.rows],
                "details": {str(k): _jsonable(res.metrics()) for k, res in self.results.items()}}
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(data, indent=1))
        return data

    def save(self, out_dir: str | Path, stem: str = "probe_sweep", probes: bool = False) -> dict[str, Path]:
        """Write ``<stem>.csv``, ``<stem>.json``, ``<stem>.png`` (and, with ``probes``, every
        layer's probe under ``<stem>_probes/``) into ``out_dir``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
        self.to_csv(paths["csv"])
        self.to_json(paths["json"])
        self.plot(paths["png"])
        if probes:
            for k, res in self.results.items():
                res.probe.save(out / f"{stem}_probes" / str(k).replace("/", "_"))
        return paths

    def plot(self, path: str | Path | None = None, title: str | None = None) -> Any:
        """Train and test accuracy (R^2 for regression) per layer, with the chance level dashed."""
        from hooked_asr.plotting import plot_curves, save_figure

        stacks = {r["stack"] for r in self.rows}
        if len(stacks) == 1 and all(isinstance(r["layer"], int) for r in self.rows):
            xs: list[Any] = [r["layer"] for r in self.rows]
            xlabel = f"{next(iter(stacks))} layer" if None not in stacks else "layer"
        else:
            xs = [f"{(r['stack'] or '')[:3]}{r['layer']}" for r in self.rows]
            xlabel = "layer"
        if self.task == "classification":
            curves = {"train": [r["train_acc"] for r in self.rows], "test": [r["test_acc"] for r in self.rows]}
            ylabel = "accuracy"
        else:
            curves = {"train": [r["train_r2"] for r in self.rows], "test": [r["test_r2"] for r in self.rows]}
            ylabel = "R^2"
        fig = plot_curves({k: np.asarray(v, dtype=float) for k, v in curves.items()}, x=xs, xlabel=xlabel,
                          ylabel=ylabel, title=self.title if title is None else title)
        ax = fig.axes[0]
        if all(isinstance(x, int) for x in xs):
            ax.set_xticks(xs)  # layers are whole numbers
        if self.task == "classification":
            chance = [r["chance"] for r in self.rows if not math.isnan(r["chance"])]
            if chance:
                ax.axhline(float(np.mean(chance)), ls="--", color="grey", lw=1, label="chance")
                ax.legend(fontsize=8)
            ax.set_ylim(-0.02, 1.02)
        return save_figure(fig, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return _py(v)


def _store_labels(store: Any, label_key: str) -> Any:
    try:
        return store.labels(label_key)
    except KeyError:
        items = store.items()
        if items and all(label_key in it for it in items):
            return [it[label_key] for it in items]
        raise KeyError(
            f"label {label_key!r} is neither a numeric label ({store.label_keys()}) nor a string field of every "
            f"item in the store at {store.root}"
        ) from None


def probe_layers(
    source: Mapping[Any, Any] | Any,
    y: Any = None,
    hooks: Sequence[str] | None = None,
    label_key: str = "label",
    task: str = "auto",
    test_size: float = 0.2,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    max_iter: int = 500,
    device: str | torch.device | None = None,
    title: str = "",
    progress: bool = False,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> ProbeSweep:
    """Fit one probe per layer on the same split (``split``: explicit ``(train_idx,
    test_idx)``, e.g. held-out words, overriding ``test_size``/``seed``).

    ``source``: ``{layer or hook name: X [n, d]}``, or an :class:`ActivationStore`
    (``hooks`` defaults to all its hooks, ``y`` to ``store.labels(label_key)``, or a
    string field of the items). Every layer must have the same number of rows as ``y``.
    """
    from hooked_asr.activations.store import ActivationStore

    store = source if isinstance(source, ActivationStore) else None
    if store is not None:
        keys = list(hooks) if hooks is not None else store.hook_names
        for h in keys:
            store._check(h)
            if store.pooling(h) == "none":
                raise ValueError(f"{h!r} was stored with pooling 'none' (one row per frame/token); probes need "
                                 "one row per item: extract with pooling 'mean' or 'final'")
        if y is None:
            y = _store_labels(store, label_key)

        def get(k: Any) -> torch.Tensor:
            return store.load(k)
    else:
        if not isinstance(source, Mapping):
            raise TypeError(f"source must be a mapping {{layer: X}} or an ActivationStore, got {type(source).__name__}")
        if y is None:
            raise ValueError("pass the labels y (one per row of each layer's X)")
        keys = list(hooks) if hooks is not None else list(source)
        missing = [k for k in keys if k not in source]
        if missing:
            raise KeyError(f"layers {missing} are not in the mapping (keys: {list(source)})")
        sizes = {k: len(source[k]) for k in keys}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"layers have different numbers of rows: {sizes}; every layer needs one row per item")

        def get(k: Any) -> torch.Tensor:
            return source[k]
    if not keys:
        raise ValueError("no layers to probe")

    first = _as_features(get(keys[0]), f"X[{keys[0]!r}]")
    arr, numeric = _as_labels(y, first.shape[0])
    task_ = _resolve_task(task, arr, numeric)
    tr, te = split if split is not None else stratified_split(arr, test_size, seed, stratify=task_ == "classification")
    rows, results = [], {}
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None  # type: ignore[assignment]
    it = keys if not progress or tqdm is None else tqdm(keys, desc="probe", unit="layer")
    for k in it:
        X = first if k == keys[0] else _as_features(get(k), f"X[{k!r}]")
        if X.shape[0] != arr.shape[0]:
            raise ValueError(f"layer {k!r} has {X.shape[0]} rows, the labels {arr.shape[0]}")
        res = fit_probe(X, arr, task_, l2=l2, max_iter=max_iter, device=device, split=(tr, te))
        stack, layer = _layer_of(k)
        row = {"key": k, "layer": layer, "stack": stack, "hook": k if isinstance(k, str) else None,
               "d": X.shape[1], **{m: v for m, v in res.metrics().items() if m not in ("confusion", "classes")}}
        rows.append(row)
        results[k] = res
    return ProbeSweep(rows, results, task_, title=title, store=store)


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
    store = extract_activations(model, dataset, names, out_dir, pooling=pooling, shard_size=shard_size,
                                batch_size=batch_size, language=language, max_new_tokens=max_new_tokens,
                                dataset_id=dataset_id, progress=progress)
    return probe_layers(store, hooks=names, label_key=label_key, **probe_kwargs)


__all__ = [
    "DEFAULT_L2",
    "LinearProbe",
    "ProbeResult",
    "ProbeSweep",
    "confusion_matrix",
    "f1_from_confusion",
    "fit_probe",
    "model_hooks",
    "probe_layers",
    "probe_model",
    "stratified_split",
    "train_probe",
]
