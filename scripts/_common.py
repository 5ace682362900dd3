"""What every experiment script shares (run as scripts, they import this by its bare name).

- the repository root goes first on ``sys.path``, so ``python scripts/x.py`` runs against this
  checkout's ``hooked_asr`` and not some other installed copy;
- :func:`parser` / :func:`add_probe_options`: the argument parser and the probe options;
- :func:`setup`: seed, output folder, model loaded on the chosen device in eval mode;
- :class:`PackedSpeech`: lazy training windows, several espeak-ng utterances each;
- :func:`patching_item`: one spoken sentence set up for patching (clean transcript teacher-forced,
  white-noise reference, the log-prob metric);
- :func:`print_table`: one readable table format for every script, with the paper's numbers in
  their own columns where the paper reports them (``paper ...``) and ``-`` where it does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` whose ``--help`` shows the script's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_probe_options(
    ap: argparse.ArgumentParser,
    l2: float = 1e-3,
    test_size: float = 0.2,
    smoke_help: str = "tiny settings (n=4) for a quick check",
) -> None:
    """``--seed --l2 --test-size --batch-size --device --smoke`` with per-script defaults."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l2", type=float, default=l2, help="L2 penalty of the logistic probes")
    ap.add_argument("--test-size", type=float, default=test_size, help="held-out share (stratified)")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per extraction batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help=smoke_help)


def setup(args: argparse.Namespace, model_name: str | None = None) -> tuple[Any, Path, float]:
    """Seed torch, create ``args.out``, load ``model_name`` (default ``args.model``).

    Returns ``(model, out_dir, t0)``; ``t0`` is ``time.time()`` at the start."""
    import hooked_asr

    t0 = time.time()
    torch.manual_seed(getattr(args, "seed", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = model_name or args.model
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    model = hooked_asr.load_model(name).to(device).eval()
    return model, out, t0


class PackedSpeech:
    """Lazy clips for SAE training: item ``i`` is ``groups[i]``'s ``(text, voice)`` utterances
    spoken by espeak-ng one after another, 0.3 s of silence after each, cut to ``max_seconds``."""

    def __init__(self, groups: list[list[tuple[str, str]]], max_seconds: float = 28.0):
        self.groups, self.max_samples = groups, int(max_seconds * 16000)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Any:
        import numpy as np

        from hooked_asr.datasets.espeak import synthesize

        gap = np.zeros(4800, dtype=np.float32)
        parts = []
        for text, voice in self.groups[i]:
            parts += [synthesize(text, voice=voice), gap]
        return np.concatenate(parts)[: self.max_samples]


@dataclass
class PatchingItem:
    """One utterance ready to patch: ``tf`` the teacher-forced clean inputs, ``ref_kwargs`` the
    same tokens on the white-noise reference, ``metric(logits)`` the mean log-prob of the tokens."""

    audio: Any
    clean: Any
    tf: Any
    ref_kwargs: dict[str, Any]
    metric: Callable[[Any], Any]


def patching_item(model: Any, sentence: str, seed: int) -> PatchingItem:
    """``sentence`` said by espeak-ng, transcribed greedily and teacher-forced; the reference is
    RMS-matched white noise (``seed``) under the same tokens, and the metric is

        m = mean log p(clean transcript tokens)."""
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import continuation_logprob, reference_inputs, white_noise_like

    audio = synthesize(sentence)
    clean = model.transcribe(audio, language="en")
    tf = model.teacher_forced_inputs(audio, clean.tokens, language="en")
    ref_kwargs = reference_inputs(model, tf.kwargs, white_noise_like(audio, seed=seed))  # the clean prompt
    return PatchingItem(
        audio, clean, tf, ref_kwargs, lambda logits: continuation_logprob(logits, tf.tokens, tf.prompt_len)
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.3f}"
    return str(v)


def print_table(rows: Any, title: str = "", columns: list[str] | None = None) -> str:
    """Print ``rows`` (a DataFrame or a list of dicts) as a Markdown table and return the text.

    Missing values print as ``-`` (``None`` / NaN: the paper does not report that cell)."""
    if hasattr(rows, "to_dict"):
        columns = columns or [str(c) for c in rows.columns]
        rows = rows.to_dict("records")
    rows = list(rows)
    columns = columns or (list(rows[0]) if rows else [])
    lines = [f"| {' | '.join(columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    lines += [f"| {' | '.join(_fmt(r.get(c)) for c in columns)} |" for r in rows]
    text = (f"{title}\n" if title else "") + "\n".join(lines)
    print(text)
    return text


def relative_depth(layer: int, n_layers: int) -> float:
    """``layer / (n_layers - 1)``: 0 for the first block, 1 for the last (0-based layers)."""
    return layer / max(n_layers - 1, 1)


def nearest_paper_row(
    layer: int, n_layers: int, paper_rows: dict[int, Any], paper_n_layers: int = 32
) -> tuple[int, Any]:
    """The paper's row (``{paper layer: row}``) at the relative depth closest to ours, so a
    4-layer model's layer 3 sits beside large-v3's last reported layer."""
    d = relative_depth(layer, n_layers)
    key = min(paper_rows, key=lambda k: (abs(relative_depth(k, paper_n_layers) - d), k))
    return key, paper_rows[key]


def ks_statistic(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``max_x |F_a(x) - F_b(x)|`` (0: identical)."""
    import numpy as np

    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())
