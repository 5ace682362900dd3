"""``hooked-asr transcribe``: word timings as SRT/VTT/JSON from the real tiny.en."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_cli_writes_srt_vtt_and_json_with_word_timings(whisper_tiny_en, tmp_path, capsys, monkeypatch):
    import soundfile as sf

    from hooked_asr.cli import main
    from hooked_asr.datasets.espeak import synthesize

    monkeypatch.setattr("hooked_asr.loading.registry.load_model", lambda *a, **k: whisper_tiny_en)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.concatenate([synthesize("Good morning everyone."), np.zeros(8000, np.float32)]), 16000)
    assert main(["transcribe", str(wav), "--word-timestamps", "--output-format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    words = [w["word"].strip() for w in data["words"]]
    assert words and all(w["start"] <= w["end"] for w in data["words"])
    assert main(["transcribe", str(wav), "--word-timestamps", "--beam-size", "5", "--output-format", "srt"]) == 0
    srt = capsys.readouterr().out
    stamps = re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> ", srt)
    assert len(stamps) == len(words) and srt.startswith("1\n")
    assert main(["transcribe", str(wav), "--output-format", "vtt"]) == 0
    assert capsys.readouterr().out.startswith("WEBVTT")
