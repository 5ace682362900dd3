"""Shared plotting helpers (matplotlib, headless).

Every function takes plain arrays (or a result object's fields), draws one figure, writes it
when ``path`` is given and returns the ``Figure``. Nothing here reads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported on first use (plots are optional; the import is slow)."""
    # No matplotlib.use(): headless machines fall back to Agg by themselves, and forcing it
    # would stop notebooks from showing figures inline.
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path | None, dpi: int = 130) -> Any:
    """Write ``fig`` to ``path`` (parents created) and close it; returns ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        pyplot().close(fig)
    return fig


def plot_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cell_text: Sequence[Sequence[str]] | None = None,
    title: str = "",
    cbar_label: str = "",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    path: str | Path | None = None,
) -> Any:
    """A ``[rows, cols]`` heatmap, optionally with a short text in each cell (row 0 at the bottom,
    as layers read in a lens plot)."""
    plt = pyplot()
    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.75 * n_cols + 2), max(2.5, 0.45 * n_rows + 1.5)))
    im = ax.imshow(values, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n_cols), labels=list(col_labels), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), labels=list(row_labels), fontsize=8)
    if cell_text is not None:
        for r in range(n_rows):
            for c in range(n_cols):
                # text colour from the cell's own luminance, so it reads on any colormap (diverging too)
                red, green, blue, _ = im.cmap(im.norm(values[r, c]))
                light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
                ax.text(
                    c, r, cell_text[r][c], ha="center", va="center", fontsize=6, color="black" if light else "white"
                )
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_curves(
    curves: Mapping[str, np.ndarray],
    x: Sequence[Any] | None = None,
    xlabel: str = "layer",
    ylabel: str = "",
    title: str = "",
    path: str | Path | None = None,
) -> Any:
    """Lines with shaded confidence bands: each curve is ``[n, 3]`` (mean, low, high) or ``[n]``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, c in curves.items():
        c = np.asarray(c, dtype=float)
        xs = np.arange(c.shape[0]) if x is None else np.asarray(x)
        mean = c[:, 0] if c.ndim == 2 else c
        ax.plot(xs, mean, marker="o", ms=3, label=name)
        if c.ndim == 2 and c.shape[1] >= 3:
            ax.fill_between(xs, c[:, 1], c[:, 2], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_bars(
    values: Mapping[str, Sequence[float]],
    labels: Sequence[str],
    errors: Mapping[str, Sequence[Sequence[float]]] | None = None,
    ylabel: str = "",
    title: str = "",
    path: str | Path | None = None,
) -> Any:
    """Grouped bars: one group per label, one bar per key of ``values``; ``errors[key]`` is
    ``[2, n]`` (below, above) when given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) * len(values) + 2), 3.6))
    width = 0.8 / max(len(values), 1)
    for i, (name, v) in enumerate(values.items()):
        xs = np.arange(len(labels)) + (i - (len(values) - 1) / 2) * width
        yerr = None if errors is None or name not in errors else np.asarray(errors[name])
        ax.bar(xs, v, width, yerr=yerr, capsize=3, label=name)
    ax.set_xticks(range(len(labels)), labels=list(labels), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if len(values) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---- lens figures -------------------------------------------------------------------------


def plot_logit_lens(result: Any, path: str | Path | None = None, title: str = "", max_steps: int = 40) -> Any:
    """Heatmap of a :class:`~hooked_asr.lens.LogitLensResult`: colour = probability of the chosen
    token at each layer (rows) and step (columns); text = that layer's top-1 token."""
    n = min(result.n_steps, max_steps)
    probs = result.chosen_prob[:, :n].numpy()
    cells = [[_short(result.topk_strs[l][s][0]) for s in range(n)] for l in range(result.n_layers)]
    cols = [_short(t) for t in result.token_strs[:n]]
    rows = [f"L{l}" for l in range(result.n_layers)]
    return plot_heatmap(
        probs,
        rows,
        cols,
        cell_text=cells,
        title=title or f"logit lens ({result.mode})",
        cbar_label="p(chosen token)",
        path=path,
    )


def _short(s: str, n: int = 7) -> str:
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_lens_curves(curves: Mapping[str, Any], path: str | Path | None = None, title: str = "") -> Any:
    """Dataset curves (``{model name: LensCurves}``): probability of the chosen token by relative
    depth (layer / (n_layers - 1)), with confidence bands."""
    xs, series = {}, {}
    for name, c in curves.items():
        n = c.chosen_prob.shape[0]
        series[name] = c.chosen_prob
        xs[name] = np.arange(n) / max(n - 1, 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, c in series.items():
        ax.plot(xs[name], c[:, 0], marker="o", ms=3, label=name)
        ax.fill_between(xs[name], c[:, 1], c[:, 2], alpha=0.2)
    ax.set_xlabel("relative decoder depth (layer / (L-1))")
    ax.set_ylabel("p(final token)")
    ax.set_title(title or "logit lens: probability of the final token", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


__all__ = [
    "pyplot",
    "save_figure",
    "plot_heatmap",
    "plot_curves",
    "plot_bars",
    "plot_logit_lens",
    "plot_lens_curves",
    "plot_word_alignment",
]


def plot_word_alignment(
    model: Any,
    audio: Any,
    result: Any | None = None,
    path: str | Path | None = None,
    title: str = "",
    alignment_heads: Any = "detected",
    word_unit: str = "token",
) -> Any:
    """Words under the log-mel spectrogram, above the alignment heads' attention.

    Top: the log-mel of ``audio`` with each word of ``result.words`` (``model.transcribe(audio,
    word_timestamps=True, alignment_heads=..., word_unit=...)`` when not given) at its start/end.
    Bottom: the matrix the word timings are read from (``model.alignment_matrix`` with the same
    heads and unit: one row per text token or character, the row that predicts it, over 20-ms
    encoder frames) with the DTW path's word starts. Pass the options ``result`` was made with."""
    from hooked_asr.audio import ENCODER_FRAME_SECONDS, HOP_LENGTH, MEL_FRAME_SECONDS, load_audio, log_mel_spectrogram

    plt = pyplot()
    wave = load_audio(audio, allow_long=False)
    if result is None:
        result = model.transcribe(wave, word_timestamps=True, alignment_heads=alignment_heads, word_unit=word_unit)
    if not result.words:
        raise ValueError("the transcript has no words to plot")
    mel = log_mel_spectrogram(wave, model.cfg.encoder.n_mels)[0]
    n = -(-len(wave) // HOP_LENGTH)
    tokens = [t for t in result.tokens if t < model.cfg.eos_token_id]
    matrix = model.alignment_matrix(
        tokens,
        input_features=mel[None].to(model.device),
        num_frames=n,
        language=result.language,
        heads=alignment_heads,
        unit=word_unit,
    )
    seconds = n * MEL_FRAME_SECONDS
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    a0.imshow(mel[:, :n].numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[0]), cmap="magma")
    for w in result.words:
        a0.axvline(w.start, color="w", lw=0.8)
        a0.text((w.start + w.end) / 2, mel.shape[0] * 1.02, w.word.strip(), ha="center", va="bottom", fontsize=8)
    a0.set_ylabel("mel bin")
    a0.set_title(title or "words under the spectrogram", pad=16)
    m = matrix.cpu().numpy()
    a1.imshow(
        m,
        origin="upper",
        aspect="auto",
        extent=(0, m.shape[1] * ENCODER_FRAME_SECONDS, m.shape[0] - 0.5, -0.5),
        cmap="viridis",
    )
    for w in result.words:
        a1.axvline(w.start, color="w", lw=0.8, ls="--")
    a1.set_xlabel("time (s)")
    names = [model.tokenizer.token_to_string(t) if model.tokenizer else str(t) for t in tokens] + ["<eot>"]
    if m.shape[0] != len(names) and model.tokenizer is not None:  # one row per character
        names = list(model.tokenizer.decode(tokens).lstrip()) + ["<eot>"]
    if m.shape[0] != len(names):
        names = [str(i) for i in range(m.shape[0])]
    a1.set_ylabel(("token" if m.shape[0] == len(tokens) + 1 else "character") + " (predicting row)")
    a1.set_yticks(range(len(names)))
    a1.set_yticklabels([_short(x, 10) for x in names], fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)
