"""Execute every notebook in ``notebooks/`` (tests/test_notebooks.py checks each is up to date with its
source).

Each notebook ends with a cell that ``assert``s a property of what it showed (hooked logits
equal plain ones, an ablation changes logits only from its layer on, a probe beats chance,
the SAE's FVU < 1, ...), so a notebook that runs but shows the wrong thing fails here.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``) through a kernel
spec written to a temporary folder, so the test never depends on which ``python3`` kernel a
machine has registered; the working directory is a temporary folder, so nothing is written
to the checkout. Set ``HOOKED_ASR_NOTEBOOK_OUT=folder`` to keep the executed notebooks
(outputs and figures included) there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 180  # one cell; a whole notebook should take well under a minute on 2 cores


def _kernel_manager(tmp_path: Path):
    """A KernelManager that launches ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kdir = tmp_path / "kernels" / "hooked-asr-test"
    kdir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hooked_asr test kernel",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(kdir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="hooked-asr-test", kernel_spec_manager=ksm)


def _error_report(nb, err: Exception) -> str:
    """The failing cell's source and traceback (nbclient's message is the traceback alone)."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell:\n{cell.source}\n\n{err}"
    return str(err)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    work = tmp_path / "cwd"
    work.mkdir()
    km = _kernel_manager(tmp_path)
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(
            f"{path.name} failed after {time.perf_counter() - t0:.1f} s\n{_error_report(nb, err)}", pytrace=False
        )
    finally:
        if km.has_kernel:  # a kernel manager we pass in is ours to shut down
            km.shutdown_kernel(now=True)
        if os.environ.get("HOOKED_ASR_NOTEBOOK_OUT"):  # keep the executed notebook (with figures) to look at
            out = Path(os.environ["HOOKED_ASR_NOTEBOOK_OUT"])
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / path.name)
    seconds = time.perf_counter() - t0
    print(f"{path.name}: {seconds:.1f} s")
    # The final cell holds the notebook's assertions: it must have run (not been left empty).
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "assert" in code[-1].source, f"{path.name}: the last code cell should assert what the notebook showed"
    assert code[-1].get("execution_count") is not None
