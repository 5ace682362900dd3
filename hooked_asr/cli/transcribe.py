"""``hooked-asr transcribe FILE...``: transcripts of any length (beam search, timestamps, word
timings) as text, JSON, SRT or WebVTT, with a progress bar over the 30-s windows of long files."""

from __future__ import annotations

import argparse
import json
import sys

from hooked_asr.cli._common import add_audio_arguments, add_model_argument, audio_inputs, load_model_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files (or a sentence spoken by espeak-ng with --say)")
    add_audio_arguments(p, many=True, audio_help="wav/flac/ogg files (any length)")
    add_model_argument(p)
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--beam-size", type=int, default=None, help="beam search with this many beams (default: greedy)")
    p.add_argument("--temperature", type=float, nargs="+", default=[0.0],
                   help="one temperature, or several for fallback (e.g. 0 0.2 0.4 0.6 0.8 1.0)")
    p.add_argument("--word-timestamps", action="store_true", help="time every word (cross-attention DTW)")
    p.add_argument("--initial-prompt", default=None, help="text to condition the first window on")
    p.add_argument("--output-format", default="txt", choices=["txt", "json", "srt", "vtt"])
    p.add_argument("--json", action="store_true", help="same as --output-format json")
    p.set_defaults(func=run)


def _clock(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_result(out, fmt: str, name: str) -> str:
    """One result as ``txt`` (the text), ``json`` (every field), ``srt`` or ``vtt`` (segments, or
    words when word timings were asked for)."""
    if fmt == "json":
        return json.dumps({"input": name, **out.to_dict()})
    if fmt == "txt":
        return out.text or ""
    cues = [(w.start, w.end, w.word.strip()) for w in out.words] if out.words else [
        (s.start, s.end, s.text.strip()) for s in out.segments]
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for i, (a, b, text) in enumerate(cues, 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_clock(a, sep)} --> {_clock(b, sep)}", text, ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    inputs = audio_inputs(args)
    fmt = "json" if args.json else args.output_format
    model = load_model_from_args(args)
    temps = args.temperature[0] if len(args.temperature) == 1 else tuple(args.temperature)
    for name, audio, _ in inputs:
        out = model.transcribe(
            audio, language=args.language, task=args.task, beam_size=args.beam_size, temperature=temps,
            word_timestamps=args.word_timestamps, initial_prompt=args.initial_prompt,
            without_timestamps=False if fmt in ("srt", "vtt") and not args.word_timestamps else None,
        )
        if fmt == "txt" and len(inputs) > 1:
            print(f"{name}: {out.text}   (avg log-prob {out.avg_logprob:.2f})")
        else:
            print(format_result(out, fmt, name))
        sys.stdout.flush()
    return 0


__all__ = ["add_parser", "format_result", "run"]
