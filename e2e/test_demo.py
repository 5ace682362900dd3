"""`hooked-asr demo` (the README's main job) end to end on the real tiny.en with small settings,
its links to the explorer views of the same clips, and the report opened in headless Chromium
when it is installed (CI installs it)."""

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


def test_default_sentence_is_heard_exactly(demo_dir):
    from hooked_asr.cli.demo import DEFAULT_SENTENCE

    report = json.loads((demo_dir / "report.json").read_text())
    assert report["sentence"] == DEFAULT_SENTENCE
    assert report["transcript"] == DEFAULT_SENTENCE  # a newcomer's first look is a working model


def _explorer_data(path: Path) -> dict:
    page = path.read_text()
    return json.loads(re.search(r'<script type="application/json" id="ha-data">(.*?)</script>', page, re.S)[1])


def test_report_links_to_the_explorer_of_the_same_clip(demo_dir):
    import soundfile as sf

    report = json.loads((demo_dir / "report.json").read_text())
    page = (demo_dir / "report.html").read_text()
    assert "href='explorer.html'" in page and "href='misheard.explorer.html'" in page
    view = _explorer_data(demo_dir / "explorer.html")
    assert view["transcript"]["text"] == report["transcript"]
    assert [t["id"] for t in view["transcript"]["tokens"]][:-1] == report["tokens"]
    audio, sr = sf.read(demo_dir / "speech.wav")
    assert view["audio"]["duration"] == pytest.approx(len(audio) / sr)
    # the explorer's patching panel is the report's sweep, with a patched transcript per head
    assert view["patching"]["metric"] == "logprob"
    assert set(view["patching"]["transcripts"]) == {row["component"] for row in report["patching"]["table"]}
    assert view["probe"]["metrics"]["test_acc"] == [round(r["test_acc"], 4) for r in report["probe"]]


def test_misheard_example_shows_where_it_goes_wrong(demo_dir):
    import hooked_asr

    m = json.loads((demo_dir / "report.json").read_text())["misheard"]
    assert m["heard"] != m["said"]
    model = hooked_asr.load_model("whisper-tiny.en")
    heard, said = m["heard_tokens"], m["said_tokens"]
    assert said == model.tokenizer.encode(" " + m["said"]) and model.tokenizer.decode(heard).strip() == m["heard"]
    i = m["first_wrong_token"]
    assert heard[:i] == said[:i] and heard[i] != said[i]
    assert len(m["lens"]) == model.cfg.decoder.n_layers
    # teacher-forced on the same prefix, the last layer's top-1 is what greedy decoding heard
    last = m["lens"][-1]
    assert last["top-1"] == m["heard_token"] and last["rank said"] > 1
    view = _explorer_data(demo_dir / "misheard.explorer.html")
    assert view["transcript"]["text"] == m["heard"] and view["transcript"]["reference"] == m["said"]


def test_report_html_is_self_contained(demo_dir):
    page = (demo_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert 'src="http' not in page and 'href="http' not in page  # nothing fetched from a network


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(demo_dir):
    import os

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }  # this checkout's hooked_asr
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "screenshot_report.py"), str(demo_dir / "report.html")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads((demo_dir / "report_check.json").read_text())
    assert seen["n_images"] == 3 and seen["images_rendered"] == 3
    assert seen["non_white_fraction"] > 0.02 and seen["js_errors"] == []
