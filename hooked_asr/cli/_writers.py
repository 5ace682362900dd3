"""Transcripts as files: txt, vtt, srt, tsv and json, as openai-whisper's ``whisper/utils.py``
writes them (``WriteTXT``, ``WriteVTT``, ``WriteSRT``, ``WriteTSV``, ``WriteJSON``).

Every format is written from one :class:`TranscriptionResult`, so the text is the same in all
of them. Subtitle cues are the segments; with word timings, ``max_line_width`` /
``max_line_count`` re-flow the words into lines and cues and ``highlight_words`` underlines each
word while it is spoken (openai's ``SubtitlesWriter.iterate_result``). Unlike openai, cue text is
escaped for the formats (``-->`` -> ``->``, ``&`` -> ``&amp;``, ``<`` -> ``&lt;``), cue times are
never negative and no cue is zero-length or empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

FORMATS = ("txt", "vtt", "srt", "tsv", "json")  # openai-whisper's order for --output_format all
MIN_CUE = 0.01  # s: a cue whose end is not after its start gets this length (SRT/VTT show nothing otherwise)


@dataclass
class SubtitleOptions:
    """openai-whisper's ``--max_line_width``, ``--max_line_count``, ``--highlight_words``
    (all three need word timings)."""

    max_line_width: int | None = None
    max_line_count: int | None = None
    highlight_words: bool = False


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``[hh:]mm:ss.mmm`` (openai-whisper's ``format_timestamp``; negative times read as 0)."""
    ms = round(max(seconds, 0.0) * 1000.0)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    hours = f"{h:02d}:" if always_include_hours or h > 0 else ""
    return f"{hours}{m:02d}:{s:02d}{decimal_marker}{ms:03d}"


def escape_cue(text: str) -> str:
    """Cue text that cannot end a cue early or open a tag: ``-->`` -> ``->``, ``&`` -> ``&amp;``,
    ``<`` -> ``&lt;`` (WebVTT's escapes; SRT players read the same tags)."""
    return text.replace("-->", "->").replace("&", "&amp;").replace("<", "&lt;")


def _segment_words(result: Any) -> list[list[dict[str, Any]]] | None:
    """Every segment's words as openai's dicts (escaped), or None without word timings."""
    if not result.segments or result.segments[0].words is None:
        return None
    return [
        [{"word": escape_cue(w.word), "start": w.start, "end": w.end} for w in (s.words or [])] for s in result.segments
    ]


def _word_subtitles(
    segments: list[list[dict[str, Any]]], max_line_width: int | None, max_line_count: int | None
) -> Iterator[list[dict[str, Any]]]:
    """openai's ``iterate_subtitles``: words grouped into cues (a list of word dicts whose text
    carries the spaces and line breaks)."""
    preserve_segments = max_line_count is None or max_line_width is None
    width = max_line_width or 1000
    line_len, line_count = 0, 1
    subtitle: list[dict[str, Any]] = []
    last = next((w["start"] for s in segments for w in s), 0.0)
    for words in segments:
        for i, original in enumerate(words):
            timing = dict(original)
            long_pause = not preserve_segments and timing["start"] - last > 3.0
            has_room = line_len + len(timing["word"]) <= width
            seg_break = i == 0 and len(subtitle) > 0 and preserve_segments
            if line_len > 0 and has_room and not long_pause and not seg_break:
                line_len += len(timing["word"])
            else:
                timing["word"] = timing["word"].strip()
                if (
                    subtitle and max_line_count is not None and (long_pause or line_count >= max_line_count)
                ) or seg_break:
                    yield subtitle
                    subtitle, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    timing["word"] = "\n" + timing["word"]
                line_len = len(timing["word"].strip())
            subtitle.append(timing)
            last = timing["start"]
    if subtitle:
        yield subtitle


def subtitle_cues(result: Any, options: SubtitleOptions | None = None) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per cue: one per segment, or (with word timings and ``options``)
    openai's re-flowed and highlighted cues. Empty cues are dropped; every cue lasts > 0 s."""
    o = options or SubtitleOptions()
    words = _segment_words(result)
    cues: list[tuple[float, float, str]] = []
    if words is not None and (o.max_line_width or o.max_line_count or o.highlight_words):
        for sub in _word_subtitles(words, o.max_line_width, o.max_line_count):
            text = "".join(w["word"] for w in sub)
            if not o.highlight_words:
                cues.append((sub[0]["start"], sub[-1]["end"], text))
                continue
            last = sub[0]["start"]
            for i, this in enumerate(sub):
                if round(last * 1000) != round(this["start"] * 1000):
                    cues.append((last, this["start"], text))
                underlined = "".join(
                    re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w["word"], flags=re.S) if j == i else w["word"]
                    for j, w in enumerate(sub)
                )
                cues.append((this["start"], this["end"], underlined))
                last = this["end"]
    else:
        cues = [(s.start, s.end, escape_cue(s.text.strip())) for s in result.segments]
    out = []
    for start, end, text in cues:
        if not text.strip():
            continue
        start = max(start, 0.0)
        if round(end * 1000) <= round(start * 1000):
            end = start + MIN_CUE
        out.append((start, end, text))
    return out


def write_txt(result: Any, options: SubtitleOptions | None = None) -> str:
    """One line per segment (openai's ``WriteTXT``)."""
    return "".join(s.text.strip() + "\n" for s in result.segments if s.text.strip())


def write_vtt(result: Any, options: SubtitleOptions | None = None) -> str:
    cues = subtitle_cues(result, options)
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(a)} --> {format_timestamp(b)}\n{t}\n\n" for a, b, t in cues)


def write_srt(result: Any, options: SubtitleOptions | None = None) -> str:
    cues = subtitle_cues(result, options)
    return "".join(
        f"{i}\n{format_timestamp(a, True, ',')} --> {format_timestamp(b, True, ',')}\n{t}\n\n"
        for i, (a, b, t) in enumerate(cues, 1)
    )


def write_tsv(result: Any, options: SubtitleOptions | None = None) -> str:
    """``start<TAB>end<TAB>text`` in integer milliseconds (openai's ``WriteTSV``)."""
    rows = [
        f"{round(1000 * max(s.start, 0.0))}\t{round(1000 * max(s.end, 0.0))}\t{s.text.strip().replace(chr(9), ' ')}"
        for s in result.segments
        if s.text.strip()
    ]
    return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)


def write_json(result: Any, options: SubtitleOptions | None = None, name: str | None = None) -> str:
    """Every field (openai's layout: text, segments with their words, language, plus ours)."""
    return json.dumps({**({"input": name} if name is not None else {}), **result.to_dict()}, ensure_ascii=False)


WRITERS = {"txt": write_txt, "vtt": write_vtt, "srt": write_srt, "tsv": write_tsv, "json": write_json}

__all__ = [
    "FORMATS",
    "SubtitleOptions",
    "WRITERS",
    "escape_cue",
    "format_timestamp",
    "subtitle_cues",
    "write_json",
    "write_srt",
    "write_tsv",
    "write_txt",
    "write_vtt",
]
