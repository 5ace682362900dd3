"""``hooked-asr transcribe FILE...``: transcripts of any length (beam search, timestamps, word
timings) as text, JSON, SRT or WebVTT, with a progress bar over the 30-s windows of long files."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files (or a sentence spoken by espeak-ng with --say)")
    p.add_argument("audio", nargs="*", help="wav/flac/ogg files (any length)")
    p.add_argument("--say", default=None, help="synthesise this sentence with espeak-ng and transcribe it")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice for --say")
    p.add_argument("--model", default=None, help="model name or path (default: whisper-tiny.en)")
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
    from hooked_asr.loading.registry import DEFAULT_MODEL, load_model

    if not args.audio and not args.say:
        raise SystemExit("give audio files or --say 'a sentence'")
    fmt = "json" if args.json else args.output_format
    model = load_model(args.model or DEFAULT_MODEL)
    inputs: list = list(args.audio)
    if args.say:
        from hooked_asr.datasets.espeak import synthesize

        inputs.append(synthesize(args.say, voice=args.voice))
    temps = args.temperature[0] if len(args.temperature) == 1 else tuple(args.temperature)
    for name, audio in zip(args.audio + (["--say"] if args.say else []), inputs):
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
