"""``hooked-asr explore FILE.wav`` writes the view of that file and prints its path."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
