"""Every notebook in ``notebooks/`` is what ``notebooks/build.py`` makes from its source, with no
outputs (e2e/test_notebooks.py executes them)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_getting_started_hooks",
    "02_lenses",
    "03_patching_cross_attention_head",
    "04_probing",
    "05_sae_features",
    "07_explore",
]


def test_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert all(n in names for n in EXPECTED), names


def test_notebooks_match_sources():
    """Every committed .ipynb is what ``notebooks/build.py`` makes from ``notebooks/src``, with no outputs."""
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        import build
    finally:
        sys.path.pop(0)
    srcs = build.sources()
    assert sorted(s.stem for s in srcs) == sorted(p.stem for p in NOTEBOOKS)
    for src in srcs:
        nb_path = ROOT / "notebooks" / f"{src.stem}.ipynb"
        assert nb_path.read_text() == build.render(src), f"{nb_path.name} is stale: run python notebooks/build.py"
        nb = nbformat.read(nb_path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has outputs"
