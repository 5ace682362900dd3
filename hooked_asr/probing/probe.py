"""Linear probes on pooled activations (paper Sec 4.1-4.3): the probe, its training, its metrics.

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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

from hooked_asr.files import (
    FileCheckError,
    atomic_save_safetensors,
    atomic_write_text,
    header_shapes,
    read_checked_safetensors,
)
from hooked_asr.probing.data import Task, as_features, as_labels, resolve_task, stratified_split, to_python


DEFAULT_L2 = 1e-3


class LinearProbe(nn.Module):
    """Standardisation (``mean``, ``std`` buffers) followed by one linear layer.

    ``task="classification"``: ``len(classes)`` classes; the layer has one output for two
    classes (the logit of ``classes[1]``) and one per class otherwise.
    ``task="regression"``: one output, de-standardised with ``y_mean`` / ``y_std``.
    ``classes`` are the label values (ints, floats or strings), sorted.
    """

    def __init__(
        self,
        d_in: int,
        task: Task = "classification",
        classes: Sequence[Any] | None = None,
        dtype: torch.dtype = torch.float32,
    ):
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
        return {
            "format": "hooked_asr.probe/1",
            "d_in": self.d_in,
            "task": self.task,
            "classes": self.classes,
            "dtype": str(self.mean.dtype).replace("torch.", ""),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (weights + buffers, config in the header) and
        ``<path>.json`` (the config, readable), each atomically. Returns the safetensors path."""
        path = Path(path)
        st = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
        cfg = json.dumps(self.config())
        atomic_save_safetensors(self.state_dict(), st, metadata={"config": cfg})
        atomic_write_text(st.with_suffix(".json"), json.dumps(self.config(), indent=1))
        return st

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "LinearProbe":
        """Read what :meth:`save` wrote. The config's sizes are checked against the tensors'
        shapes before anything is allocated, and NaN/inf weights are refused."""
        from safetensors import safe_open

        path = Path(path)
        st = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
        if not st.exists():
            raise FileNotFoundError(f"no probe at {st}")
        header_shapes(st)  # a damaged file: one clear error before the header's metadata is read
        with safe_open(str(st), framework="pt") as f:
            try:
                cfg = json.loads((f.metadata() or {}).get("config", "{}"))
            except json.JSONDecodeError as e:
                raise FileCheckError(f"{st}: the config in its header is not valid JSON ({e})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != "hooked_asr.probe/1":
            raise ValueError(f"{st} is not a hooked_asr probe (config {cfg})")
        d_in, task, classes = cfg.get("d_in"), cfg.get("task"), cfg.get("classes")
        if isinstance(d_in, bool) or not isinstance(d_in, int) or d_in <= 0 or not isinstance(classes, list):
            raise FileCheckError(
                f"{st}: config d_in={d_in!r}, classes={classes!r}; expected a positive integer and a list"
            )
        n_out = 1 if task == "regression" or len(classes) == 2 else len(classes)
        expected = {
            "linear.weight": (n_out, d_in),
            "linear.bias": (n_out,),
            "mean": (d_in,),
            "std": (d_in,),
            "y_mean": (),
            "y_std": (),
        }
        tensors = read_checked_safetensors(st, expected, "probe")
        dtype = getattr(torch, str(cfg.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise FileCheckError(f"{st}: config dtype {cfg.get('dtype')!r} is not a floating-point torch dtype")
        with torch.device("meta"):
            probe = cls(d_in, task, classes, dtype=dtype)
        probe.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, assign=True)
        return probe.to(device).eval()

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, task={self.task!r}, classes={self.classes}"


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
    X = as_features(X)
    arr, numeric = as_labels(y, X.shape[0])
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

    classes = list(classes) if classes is not None else sorted({to_python(v) for v in arr.tolist()}, key=_sort_key)
    present = {to_python(v) for v in arr.tolist()}
    if len(present) < 2:
        raise ValueError(
            f"the training labels hold a single class ({sorted(present, key=_sort_key)}): a probe needs at least two"
        )
    index = {c: i for i, c in enumerate(classes)}
    missing = [v for v in present if v not in index]
    if missing:
        raise ValueError(f"labels {missing[:5]} are not among classes {classes}")
    t = torch.tensor([index[to_python(v)] for v in arr.tolist()], device=device)
    probe = LinearProbe(Z.shape[1], "classification", classes, dtype=dtype).to(device)
    with torch.no_grad():
        probe.mean.copy_(mean), probe.std.copy_(std)
    W, b = probe.linear.weight, probe.linear.bias
    binary = W.shape[0] == 1
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-3,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

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
            out.update(
                train_acc=self.train_acc,
                test_acc=self.test_acc,
                f1=self.f1,
                chance=self.chance,
                classes=[to_python(c) for c in self.classes],
                confusion=None if self.confusion is None else self.confusion.tolist(),
            )
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
    X = as_features(X)
    arr, numeric = as_labels(y, X.shape[0])
    task_ = resolve_task(task, arr, numeric)
    if task_ == "classification":
        classes = sorted({to_python(v) for v in arr.tolist()}, key=_sort_key)
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

    if len({to_python(v) for v in arr[tr].tolist()}) < 2:
        raise ValueError("the training split holds a single class: a probe needs at least two")
    probe = train_probe(
        X[tr_t], arr[tr], "classification", classes=classes, l2=l2, max_iter=max_iter, tol=tol, device=device
    )
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[to_python(v)] for v in arr.tolist()], dtype=np.int64)
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


__all__ = [
    "DEFAULT_L2",
    "LinearProbe",
    "ProbeResult",
    "confusion_matrix",
    "f1_from_confusion",
    "fit_probe",
    "train_probe",
]
