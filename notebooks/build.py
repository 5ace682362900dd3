"""Build the notebooks from their sources: ``notebooks/src/NN_name.py`` -> ``notebooks/NN_name.ipynb``.

The sources are plain Python in the "percent" format (jupytext, VS Code and PyCharm read it)::

    # %% [markdown]
    # # A title
    # Some *markdown*, each line behind "# ".

    # %%
    # %matplotlib inline
    print("a code cell")

A commented IPython magic (``# %matplotlib inline``) becomes the magic in the notebook.

The .ipynb files are written without outputs (small diffs, small repository); ``e2e/test_notebooks.py``
executes them and ``tests/test_notebooks.py`` checks that they match their sources.

    python notebooks/build.py            # rebuild every notebook
    python notebooks/build.py --check    # exit 1 if a committed notebook is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
MAGIC = re.compile(r"^# %[a-z]")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_percent(text: str) -> list[tuple[str, str]]:
    """``[(cell_type, source)]`` from percent-format text ("code" or "markdown")."""
    cells: list[tuple[str, list[str]]] = []
    kind, lines = None, []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, lines))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
            continue
        if kind is None:  # a module docstring or comments before the first cell are not part of the notebook
            continue
        if kind == "markdown":
            line = line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
        elif MAGIC.match(line):  # "# %matplotlib inline" (commented so the source stays valid Python)
            line = line[2:]
        lines.append(line)
    if kind is not None:
        cells.append((kind, lines))
    out = []
    for k, ls in cells:
        while ls and not ls[0].strip():
            ls = ls[1:]
        while ls and not ls[-1].strip():
            ls = ls[:-1]
        if ls:
            out.append((k, "\n".join(ls)))
    return out


def build(src: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(parse_percent(src.read_text())):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"{src.stem[:2]}-{i:03d}"  # stable ids: rebuilding gives the same file
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(src: Path) -> str:
    return nbformat.writes(build(src)) + "\n"


def sources() -> list[Path]:
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that every notebook matches its source")
    args = ap.parse_args(argv)
    stale = []
    for src in sources():
        target = HERE / f"{src.stem}.ipynb"
        text = render(src)
        if target.exists() and target.read_text() == text:
            continue
        if args.check:
            stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
