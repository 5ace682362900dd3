"""``hooked-asr transcribe`` on the real tiny.en, as openai-whisper's ``whisper`` command behaves:
one file per input and format named from the input, one decoding behind every format (the same
text in each), subtitle cues per segment with the word timings in the JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(whisper_tiny_en, monkeypatch):
    from hooked_asr.cli import main

    monkeypatch.setattr("hooked_asr.loading.registry.load_model", lambda *a, **k: whisper_tiny_en)
    return main


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Two clips of two sentences each, in two folders."""
    import soundfile as sf

    from hooked_asr.datasets.espeak import synthesize

    root = tmp_path_factory.mktemp("wavs")
    out = []
    for folder, text in (
        ("a", "Good morning everyone. The cat sat on the mat."),
        ("b", "Please call Stella. Ask her to bring these things with her from the store."),
    ):
        (root / folder).mkdir()
        path = root / folder / f"{folder}_clip.wav"
        sf.write(path, np.concatenate([synthesize(text), np.zeros(8000, np.float32)]), 16000)
        out.append(path)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _cue_texts(srt: str) -> list[str]:
    return [" ".join(block.split("\n")[2:]) for block in srt.strip().split("\n\n")]


def _vtt_cue_texts(vtt: str) -> list[str]:
    assert vtt.startswith("WEBVTT\n\n")
    return [" ".join(block.split("\n")[1:]) for block in vtt[len("WEBVTT\n\n") :].strip().split("\n\n")]


def test_one_file_per_input_and_format_with_the_same_text(cli, wavs, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        cli(
            [
                "transcribe",
                *map(str, wavs),
                "--output-dir",
                str(out),
                "--output-format",
                "all",
                "--word-timestamps",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{w.stem}.{f}" for w in wavs for f in ("txt", "vtt", "srt", "tsv", "json")
    )
    n_segments = []
    for w in wavs:
        data = json.loads((out / f"{w.stem}.json").read_text())
        srt, vtt = (out / f"{w.stem}.srt").read_text(), (out / f"{w.stem}.vtt").read_text()
        txt, tsv = (out / f"{w.stem}.txt").read_text(), (out / f"{w.stem}.tsv").read_text()
        # one decoding: the same words in every format (srt/vtt once decoded with timestamps, txt without)
        reference = _words(data["text"])
        assert len(reference) > 5
        assert _words(txt) == reference
        assert _words(" ".join(_cue_texts(srt))) == reference
        assert _words(" ".join(_vtt_cue_texts(vtt))) == reference
        assert _words(" ".join(line.split("\t", 2)[2] for line in tsv.strip().split("\n")[1:])) == reference
        # cues per segment, numbered from 1 in every file; word timings in the JSON
        segments = data["segments"]
        n_segments.append(len(segments))
        numbers = [int(b.split("\n")[0]) for b in srt.strip().split("\n\n")]
        assert numbers == list(range(1, len(segments) + 1))
        assert vtt.startswith("WEBVTT\n\n") and vtt.count("WEBVTT") == 1
        assert vtt.count(" --> ") == len(segments)
        assert [w["word"] for s in segments for w in s["words"]] == [w["word"] for w in data["words"]]
        assert data["input"] == str(w)
    assert max(n_segments) >= 2  # tiny.en cuts "Good morning everyone." from the rest
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{w.stem}.{f}") for w in wavs for f in ("txt", "vtt", "srt", "tsv", "json")]


def test_stdout_text_is_the_same_whatever_the_format(cli, wavs, capsys):
    texts = {}
    for fmt in ("txt", "json", "srt", "vtt"):
        assert cli(["transcribe", str(wavs[1]), "--output-format", fmt, "--no-progress"]) == 0
        printed = capsys.readouterr().out
        if fmt == "json":
            texts[fmt] = _words(json.loads(printed)["text"])
        elif fmt == "txt":
            texts[fmt] = _words(printed)
        elif fmt == "srt":
            texts[fmt] = _words(" ".join(_cue_texts(printed)))
        else:
            texts[fmt] = _words(" ".join(_vtt_cue_texts(printed)))
    assert texts["txt"] == texts["json"] == texts["srt"] == texts["vtt"], texts


def test_several_inputs_without_output_dir(cli, wavs, capsys):
    assert cli(["transcribe", *map(str, wavs), "--output-format", "json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)  # one JSON document, not JSON lines
    assert [d["input"] for d in data] == [str(w) for w in wavs]
    assert cli(["transcribe", *map(str, wavs), "--output-format", "srt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hooked-asr: error: 2 inputs as srt: add --output-dir DIR for one file per input"]


def test_same_stem_twice_is_refused(cli, wavs, tmp_path, capsys):
    assert cli(["transcribe", str(wavs[0]), str(wavs[0]), "-o", str(tmp_path)]) == 2
    assert "would both be written as a_clip.*" in capsys.readouterr().err


def test_word_timings_reflow_cues_with_openai_options(cli, wavs, tmp_path):
    out = tmp_path / "o"
    stem = wavs[1].stem
    assert (
        cli(
            [
                "transcribe",
                str(wavs[1]),
                "-o",
                str(out),
                "-f",
                "all",
                "--word-timestamps",
                "--max-line-width",
                "16",
                "--max-line-count",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    words = json.loads((out / f"{stem}.json").read_text())["words"]
    cues = _cue_texts((out / f"{stem}.srt").read_text())
    # one line per cue, at most 16 characters unless one word is longer; every word once, in order
    assert len(cues) > 3 and all(len(c) <= 16 or " " not in c for c in cues)
    assert " ".join(cues).split() == [w["word"].strip() for w in words]
    assert (
        cli(
            [
                "transcribe",
                str(wavs[1]),
                "-o",
                str(out),
                "-f",
                "vtt",
                "--word-timestamps",
                "--highlight-words",
                "--no-progress",
            ]
        )
        == 0
    )
    highlighted = [c for c in _vtt_cue_texts((out / f"{stem}.vtt").read_text()) if "<u>" in c]
    assert [re.search(r"<u>(.*?)</u>", c).group(1) for c in highlighted] == [w["word"].strip() for w in words]


def test_allow_silence(cli, tmp_path, capsys):
    import soundfile as sf

    f = tmp_path / "quiet.wav"
    sf.write(f, np.zeros(16000, np.float32), 16000)
    assert cli(["transcribe", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "silent" in err and "--allow-silence" in err, err
    assert cli(["transcribe", str(f), "--allow-silence", "--no-progress", "-f", "json"]) == 0
    assert "text" in json.loads(capsys.readouterr().out)
