"""Layer sweeps: one probe per layer (or hook) on the same held-out split, as a table, a
JSON/CSV file and a figure.

    >>> sweep = probe_layers(store, label_key="label")          # every hook of an ActivationStore
    >>> print(sweep.summary()); sweep.plot("acc.png"); sweep.best_layer
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_asr.hooks import block_of
from hooked_asr.probing.data import Task, as_features, as_labels, resolve_task, stratified_split, to_python
from hooked_asr.probing.probe import DEFAULT_L2, ProbeResult, fit_probe


def _layer_of(key: Any) -> tuple[str | None, Any]:
    """``(stack, layer)`` for a hook name (``("encoder", 3)``), or ``(None, key)``."""
    if isinstance(key, str):
        block = block_of(key)
        if block and block[0] in ("encoder", "decoder"):
            return block
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
        data = {
            "title": self.title,
            "task": self.task,
            "best_layer": _jsonable(self.best_layer),
            "rows": [{k: _jsonable(v) for k, v in r.items()} for r in self.rows],
            "details": {str(k): _jsonable(res.metrics()) for k, res in self.results.items()},
        }
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
        fig = plot_curves(
            {k: np.asarray(v, dtype=float) for k, v in curves.items()},
            x=xs,
            xlabel=xlabel,
            ylabel=ylabel,
            title=self.title if title is None else title,
        )
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
    return to_python(v)


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
            if store.pooling(h) == "none":  # also raises KeyError naming the store's hooks
                raise ValueError(
                    f"{h!r} was stored with pooling 'none' (one row per frame/token); probes need "
                    "one row per item: extract with pooling 'mean' or 'final'"
                )
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

    first = as_features(get(keys[0]), f"X[{keys[0]!r}]")
    arr, numeric = as_labels(y, first.shape[0])
    task_ = resolve_task(task, arr, numeric)
    tr, te = split if split is not None else stratified_split(arr, test_size, seed, stratify=task_ == "classification")
    rows, results = [], {}
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None  # type: ignore[assignment]
    it = keys if not progress or tqdm is None else tqdm(keys, desc="probe", unit="layer")
    for k in it:
        X = first if k == keys[0] else as_features(get(k), f"X[{k!r}]")
        if X.shape[0] != arr.shape[0]:
            raise ValueError(f"layer {k!r} has {X.shape[0]} rows, the labels {arr.shape[0]}")
        res = fit_probe(X, arr, task_, l2=l2, max_iter=max_iter, device=device, split=(tr, te))
        stack, layer = _layer_of(k)
        row = {
            "key": k,
            "layer": layer,
            "stack": stack,
            "hook": k if isinstance(k, str) else None,
            "d": X.shape[1],
            **{m: v for m, v in res.metrics().items() if m not in ("confusion", "classes")},
        }
        rows.append(row)
        results[k] = res
    return ProbeSweep(rows, results, task_, title=title, store=store)


__all__ = ["ProbeSweep", "probe_layers"]
