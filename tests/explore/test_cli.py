"""``hooked-asr explore FILE.wav`` writes the view of that file and prints its path."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_explore_command_writes_the_view_of_the_file_and_prints_its_path(whisper_tiny_en, tmp_path, capsys):
    import soundfile as sf

    from hooked_asr.cli import main
    from hooked_asr.datasets.espeak import synthesize

    wav = tmp_path / "clip.wav"
    sf.write(wav, synthesize("Thank you very much for your help."), 16000)
    out = tmp_path / "views" / "clip.html"
    assert main(["explore", str(wav), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    data = json.loads(
        re.search(r'<script type="application/json" id="ha-data">(.*?)</script>', out.read_text(), re.S)[1]
    )
    assert data["transcript"]["text"] == whisper_tiny_en.transcribe(str(wav)).text
    assert data["audio"]["duration"] == pytest.approx(sf.info(wav).duration)
    assert main(["explore", str(tmp_path / "missing.wav")]) == 2  # the CLI's one-line user error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hooked-asr: error: ") and "does not exist" in err[0]


def test_serve_takes_another_clip_and_a_probe(whisper_tiny_en, tmp_path):
    """``--serve --other B.wav --probe P --probe-hook HOOK``: the served session offers methods 'other' and
    'probe', and a probe steer over HTTP gives the session API's numbers for the same probe."""
    import http.client
    import subprocess
    import sys
    import time

    import soundfile as sf
    import torch

    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.probing.probe import LinearProbe

    other = tmp_path / "other.wav"
    sf.write(other, synthesize("Good night and sleep well."), 16000, subtype="FLOAT")
    probe = LinearProbe(whisper_tiny_en.cfg.encoder.d_model, classes=[0, 1])
    probe.linear.weight.data.copy_(torch.randn(1, probe.d_in, generator=torch.Generator().manual_seed(2)))
    hook = "encoder.blocks.1.hook_resid_post"
    path = probe.save(tmp_path / "probe")
    said = "Thank you very much for your help."
    argv = ["explore", "--say", said, "--serve", "--model", "whisper-tiny.en", "--other", str(other)]
    argv += ["--probe", str(path), "--probe-hook", hook]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hooked_asr.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url, lines, deadline = None, [], time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"live explorer at http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
            url = m and (int(m[1]), m[2])
        assert url, "".join(lines)
        port, token = url
        specs = [{"method": "probe", "value": 30.0, "from": 0.2, "to": 1.0}]

        def post(action, body):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", f"/api/{action}", json.dumps(body), {"X-HA-Token": token})
            r = conn.getresponse()
            return r.status, json.loads(r.read())

        status, state = post("state", {})
        assert status == 200 and {"other", "probe"} <= set(state["methods"]) and state["probe"]["hook"] == hook
        status, tf = post("teacher_forced", {"interventions": specs})
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = LiveSession(whisper_tiny_en, synthesize(said), probe=probe, probe_hook=hook, encoder_lens_max_new_tokens=8)
    try:
        np.testing.assert_allclose(tf["logprobs_after"], s.teacher_forced(specs)["logprobs_after"], atol=1e-5)
    finally:
        s.close()
