"""Figures for patching results: layer x head heatmaps, one panel per (stack, attention kind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_head_heatmaps(
    result: Any, metric: str, path: str | Path, title: str | None = None, relative_to_clean: bool = False
) -> Path:
    """Write a PNG with one layer x head heatmap per (stack, kind) that the sweep covered at head level.

    ``relative_to_clean`` plots ``patched - clean`` (the effect of the patch) instead of the
    patched value, so the diverging colour scale is centred on "no effect".
    """
    import dataclasses

    import numpy as np

    from hooked_asr.plotting import pyplot

    plt = pyplot()
    if relative_to_clean:
        result = dataclasses.replace(
            result, table=result.table.assign(value=result.table["value"] - result.table["clean"])
        )
    t = result.table
    t = t[t["metric"] == metric]
    panels = [(s, k) for s, k in t[t["head"].notna()][["stack", "kind"]].drop_duplicates().itertuples(index=False)]
    if not panels:
        raise ValueError(f"no head-level rows for metric {metric!r}: sweep components with heads=True")
    vals = t["value"].astype(float)
    vmax = float(np.nanmax(np.abs(vals))) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.2), squeeze=False)
    im = None
    for ax, (stack, kind) in zip(axes[0], panels):
        grid, layers = result.heatmap(metric, stack, kind)
        cmap = "RdBu_r" if (vals < 0).any() else "viridis"
        vmin = -vmax if cmap == "RdBu_r" else 0.0
        im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
        ax.set_title(f"{stack} {kind}")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_yticks(range(len(layers)), [str(x) for x in layers])
        ax.set_xticks(range(grid.shape[1]))
    fig.colorbar(im, ax=axes[0].tolist(), label=metric)
    fig.suptitle(title or f"patching: mean {metric} per head", y=1.06)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["plot_head_heatmaps"]
