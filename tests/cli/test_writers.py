"""hooked_asr/cli/_writers.py: the files ``hooked-asr transcribe`` writes equal openai-whisper's
writers (``whisper.utils``) on the same result, except where ours escape cue text, clamp negative
times and refuse zero-length or empty cues."""

from __future__ import annotations

import dataclasses
import io

import pytest

from hooked_asr.cli._writers import SubtitleOptions, escape_cue, subtitle_cues, write_json, WRITERS
from hooked_asr.models.decoding.results import Segment, TranscriptionResult, WordTiming

whisper_utils = pytest.importorskip("whisper.utils")

SENTENCES = [
    ("Good morning everyone, and welcome to the meeting.", 0.0, 3.2),
    ("Today we talk about the budget for next year.", 3.2, 6.0),
    ("After a long pause, the last one.", 10.5, 12.0),
]


def _result(sentences=SENTENCES, words: bool = True) -> TranscriptionResult:
    segs = []
    for i, (text, a, b) in enumerate(sentences):
        ws = text.split()
        step = (b - a) / max(len(ws), 1)
        timings = [
            WordTiming(" " + w, round(a + j * step, 2), round(a + (j + 1) * step, 2), 0.9) for j, w in enumerate(ws)
        ]
        segs.append(Segment(i, 0, a, b, " " + text, [], -0.2, 1.3, 0.01, 0.0, timings if words else None))
    return TranscriptionResult(
        text=" ".join(s[0] for s in sentences),
        tokens=[],
        token_logprobs=[],
        prompt=[],
        finished=True,
        language="en",
        segments=segs,
        words=[w for s in segs for w in (s.words or [])] if words else None,
    )


def _openai(fmt: str, result: TranscriptionResult, **options) -> str:
    d = result.to_dict()
    if result.segments[0].words is None:
        for s in d["segments"]:
            s.pop("words")
    buf = io.StringIO()
    writer = whisper_utils.get_writer(fmt, ".")
    writer.write_result(d, file=buf, **({"options": {**options}} if fmt in ("srt", "vtt") else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "tsv"])
@pytest.mark.parametrize(
    "options, words",
    [
        ({}, False),  # segments only
        ({}, True),  # word timings present, cues still per segment
        ({"max_line_width": 20, "max_line_count": 2}, True),
        ({"max_line_width": 16}, True),
        ({"highlight_words": True}, True),
        ({"max_line_width": 24, "max_line_count": 1, "highlight_words": True}, True),
    ],
)  # (the re-flowing options need word timings: the CLI refuses them without --word-timestamps)
def test_files_equal_openai_whisper_writers(fmt, options, words):
    result = _result(words=words)
    ours = WRITERS[fmt](result, SubtitleOptions(**options))
    assert ours == _openai(fmt, result, **options)


def test_cues_are_segments_without_options_even_with_word_timings():
    """Word timings go in the JSON; subtitles stay one cue per segment (openai's default)."""
    result = _result()
    cues = subtitle_cues(result)
    assert [(a, b, t) for a, b, t in cues] == [(a, b, t) for t, a, b in SENTENCES]
    assert '"words": [{"word": " Good"' in write_json(result)


def test_cue_text_is_escaped_for_srt_and_vtt():
    result = _result([("a --> b <i>c</i> & d", 0.0, 1.0)], words=False)
    assert escape_cue("a --> b <i>c</i> & d") == "a -> b &lt;i>c&lt;/i> &amp; d"
    for fmt in ("srt", "vtt"):
        text = WRITERS[fmt](result, SubtitleOptions())
        body = text.split("\n")[2 if fmt == "srt" else 3]
        assert body == "a -> b &lt;i>c&lt;/i> &amp; d", text
        assert text.count("-->") == 1  # the one between the times
    # the highlight tags are ours, the word's own '<' stays escaped
    words = _result([("x<y and z", 0.0, 1.0)])
    cues = subtitle_cues(words, SubtitleOptions(highlight_words=True))
    assert cues[0][2] == "<u>x&lt;y</u> and z"


def test_no_zero_length_empty_or_negative_cues():
    result = _result([("first", -0.02, 0.0), ("second", 1.0, 1.0), (" ", 1.0, 2.0), ("third", 2.0, 2.5)], words=False)
    cues = subtitle_cues(result)
    assert [t for _, _, t in cues] == ["first", "second", "third"]
    for a, b, _ in cues:
        assert 0 <= a and round(b * 1000) > round(a * 1000)
    srt = WRITERS["srt"](result, SubtitleOptions())
    assert "-" not in srt.replace("-->", "") and "00:00:01,000 --> 00:00:01,010" in srt
    # words at one instant (a 20-ms clip) get a visible cue too
    words = dataclasses.replace(_result([("a b", 0.0, 0.0)]))
    for a, b, _ in subtitle_cues(words, SubtitleOptions(highlight_words=True)):
        assert round(b * 1000) > round(a * 1000)
