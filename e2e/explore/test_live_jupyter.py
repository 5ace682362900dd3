"""The live widget in a real JupyterLab served by a real Jupyter server, in headless Chromium over the
DevTools protocol: run the notebook, click a head in the widget's page and ablate it; the transcript
the widget shows (streamed in while it decodes) is the one the Python API gives. Needs Debian's ``chromium``, ``jupyterlab`` and
``anywidget`` (skipped without them)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]
pytest.importorskip("jupyterlab")
pytest.importorskip("anywidget")

SAID = "She opened the window and looked at the sea."
LAYER, HEAD = 0, 4
FRAME = (
    "(() => { for (const f of document.querySelectorAll('.jp-OutputArea iframe')) "
    "{ const d = f.contentDocument; if (d && d.getElementById('ha-live-comp')) return d; } return null; })()"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import hooked_asr\nfrom hooked_asr.datasets.espeak import synthesize\nfrom hooked_asr.explore.widget import live_widget\n"
            f"model = hooked_asr.load_model('whisper-tiny.en')\nw = live_widget(model, synthesize({SAID!r}), encoder_lens_max_new_tokens=8)\n"
            # slow decoding steps down, so that the page's polling sees the re-transcription stream in
            "import time\nmodel.add_hook('decoder.hook_embed', lambda x, hook: time.sleep(0.3) if model.decoding_state else None, "
            "is_permanent=True)\nw"
        )
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "live.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".cfg"), JUPYTER_RUNTIME_DIR=str(root / ".rt"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.port_retries=0",
            "--allow-root",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline, lines = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "is running at" in line or re.search(rf"127\.0\.0\.1:{port}/lab", line):
            break
        if proc.poll() is not None:
            break
    else:
        proc.kill()
        raise AssertionError("JupyterLab did not start:\n" + "".join(lines))
    if proc.poll() is not None:
        raise AssertionError("JupyterLab exited:\n" + "".join(lines))
    yield f"{url}/lab/tree/live.ipynb?token={token}"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(b, expression, timeout=300, what=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = b.evaluate(expression)
        if v:
            return v
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what or expression}")


def test_the_widget_in_jupyterlab_ablates_a_head_as_the_python_api_does(lab, whisper_tiny_en, tmp_path):
    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import patched, zero_ablate

    with patched(whisper_tiny_en, [zero_ablate(f"decoder.blocks.{LAYER}.cross_attn.head.{HEAD}")]):
        want = whisper_tiny_en.transcribe(synthesize(SAID)).text
    with Chromium(width=1400, height=1100, timeout=300) as b:
        b.open(lab, settle_ms=1000)
        _wait(
            b, "!!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))", what="the notebook to open"
        )
        _wait(
            b,
            "(() => { const w = window.jupyterapp.shell.currentWidget; return !!(w && w.sessionContext && "
            "w.sessionContext.session && w.sessionContext.session.kernel && "
            "w.sessionContext.session.kernel.connectionStatus === 'connected'); })()",
            what="the kernel",
        )
        b.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _wait(b, f"!!({FRAME} && {FRAME}.querySelector('.ha-token'))", what="the widget's page")
        frame = FRAME
        assert b.evaluate(f"{frame}.querySelector('.ha-heard b').textContent") == SAID
        b.evaluate(f'{frame}.querySelector(\'.ha-head[data-layer="{LAYER}"][data-head="{HEAD}"]\').click()')
        assert (
            b.evaluate(f"{frame}.getElementById('ha-live-comp').value")
            == f"decoder.blocks.{LAYER}.cross_attn.head.{HEAD}"
        )
        b.evaluate(f"{frame}.getElementById('ha-live-ablate-head').click()")
        partial = _wait(
            b, f"({frame}.getElementById('ha-live-partial') || {{}}).textContent", what="the streamed transcript"
        )
        assert "tokens so far" in partial
        shown = _wait(b, f"{frame}.getElementById('ha-root').dataset.liveText", what="the re-transcription")
        assert shown.startswith(b.evaluate(f"{frame}.getElementById('ha-root').dataset.livePartial").strip())
        assert shown == want
        assert float(_wait(b, f"{frame}.getElementById('ha-root').dataset.liveTf")) < 0
        shot = b.screenshot(tmp_path / "live_jupyterlab.png")
        errors = [e for e in b.errors() if "favicon" not in e]
        assert not errors, errors
    out = os.environ.get("HOOKED_ASR_ARTIFACTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / shot.name)
