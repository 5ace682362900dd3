"""`hooked-asr demo` (the README's main job) end to end on the real tiny.en with small settings,
and the report opened in headless Chromium when it is installed (CI installs it)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    from hooked_asr.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--probe-size", "4"]) == 0
    return out


def test_report_numbers_are_consistent(demo_dir):
    import hooked_asr

    report = json.loads((demo_dir / "report.json").read_text())
    model = hooked_asr.load_model("whisper-tiny.en")
    n_layers, n_heads = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
    assert report["transcript"].strip()
    # The last layer's lens is the model's own output, and the last encoder layer is the encoder.
    lens = report["logit_lens"]
    assert [step[0] for step in lens["topk_ids"][-1]] == lens["final"]
    assert report["encoder_lens"]["layers"][-1]["tokens"] == report["encoder_lens"]["final"]["tokens"]
    assert 0 <= report["mean_saturation_layer"] <= n_layers - 1
    # Every decoder self- and cross-attention head was patched once.
    table = report["patching"]["table"]
    assert len({row["component"] for row in table}) == 2 * n_layers * n_heads
    # One probe row per encoder layer, accuracies in [0, 1].
    assert [r["layer"] for r in report["probe"]] == list(range(model.cfg.encoder.n_layers))
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in report["probe"])


def test_report_html_is_self_contained(demo_dir):
    page = (demo_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "src=\"http" not in page and "href=\"http" not in page  # nothing fetched from a network


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo_dir):
    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"
    proc = subprocess.run([sys.executable, str(script), str(demo_dir / "report.html")], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads((demo_dir / "report_check.json").read_text())
    assert seen["n_images"] == 3 and seen["images_rendered"] == 3
    assert seen["non_white_fraction"] > 0.02
