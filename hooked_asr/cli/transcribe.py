"""``hooked-asr transcribe FILE...``: transcripts of any length (beam search, timestamps, word
timings) as openai-whisper's ``whisper`` command writes them.

    hooked-asr transcribe a.wav b.flac --output-dir out --output-format all   # out/a.txt, out/a.srt, ... out/b.json
    hooked-asr transcribe talk.wav --word-timestamps --max-line-width 42 --max-line-count 2 --output-format srt

Each input is decoded once, with timestamps (as openai-whisper's ``transcribe`` does), and every
format is written from that one result: the text is the same in txt, vtt, srt, tsv and json.
Subtitle cues are the segments; word timings go in the JSON (and re-flow cues with
``--max-line-width`` / ``--max-line-count`` / ``--highlight-words``). Without ``--output-dir``
one input is printed to stdout; several inputs print ``name: text`` lines (txt) or one JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hooked_asr.cli import UsageError
from hooked_asr.cli._common import add_audio_arguments, add_model_argument, audio_inputs, load_model_from_args
from hooked_asr.cli._writers import FORMATS, WRITERS, SubtitleOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files (or a sentence spoken by espeak-ng with --say)",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    add_audio_arguments(p, many=True, audio_help="wav/flac/ogg files (any length)")
    add_model_argument(p)
    p.add_argument(
        "--output-dir",
        "--output_dir",
        "-o",
        default=None,
        help="write one file per input and format, named from the input (a.wav -> DIR/a.srt); default: print to stdout",
    )
    p.add_argument(
        "--output-format",
        "--output_format",
        "-f",
        default="txt",
        choices=[*FORMATS, "all"],
        help="txt, vtt, srt, tsv, json, or all five (all needs --output-dir)",
    )
    p.add_argument("--json", action="store_true", help="same as --output-format json")
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument(
        "--task",
        default="transcribe",
        choices=["transcribe", "translate"],
        help="transcribe, or translate into English (multilingual models)",
    )
    p.add_argument(
        "--beam-size", "--beam_size", type=int, default=None, help="beam search with this many beams (default: greedy)"
    )
    p.add_argument(
        "--temperature",
        type=float,
        nargs="+",
        default=[0.0],
        help="one temperature, or several for fallback (e.g. 0 0.2 0.4 0.6 0.8 1.0)",
    )
    p.add_argument(
        "--initial-prompt",
        "--initial_prompt",
        default=None,
        help="text to condition the first window on (default: none)",
    )
    p.add_argument(
        "--word-timestamps",
        "--word_timestamps",
        action="store_true",
        help="time every word (cross-attention DTW); the words go in the JSON",
    )
    p.add_argument(
        "--highlight-words",
        "--highlight_words",
        action="store_true",
        help="srt/vtt: underline each word as it is spoken (needs --word-timestamps)",
    )
    p.add_argument(
        "--max-line-width",
        "--max_line_width",
        type=int,
        default=None,
        help="srt/vtt: at most this many characters per line (needs --word-timestamps; default: one cue per segment)",
    )
    p.add_argument(
        "--max-line-count",
        "--max_line_count",
        type=int,
        default=None,
        help="srt/vtt: at most this many lines per cue (needs --max-line-width; default: no limit)",
    )
    p.add_argument(
        "--allow-silence",
        action="store_true",
        help="transcribe silent audio too (to study hallucinations) instead of refusing it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress messages or bars on stderr")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace, fmt: str) -> SubtitleOptions:
    """Option combinations that cannot work, refused before any model is loaded."""
    for flag, value in (("--max-line-width", args.max_line_width), ("--max-line-count", args.max_line_count)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: give a positive number")
    needs_words = [
        f
        for f, on in (
            ("--highlight-words", args.highlight_words),
            ("--max-line-width", args.max_line_width is not None),
        )
        if on
    ]
    if needs_words and not args.word_timestamps:
        raise UsageError(f"{needs_words[0]} needs word timings: add --word-timestamps")
    if args.max_line_count is not None and args.max_line_width is None:
        raise UsageError("--max-line-count needs --max-line-width (the lines to count)")
    if fmt == "all" and args.output_dir is None:
        raise UsageError("--output-format all writes five files per input: add --output-dir DIR")
    return SubtitleOptions(args.max_line_width, args.max_line_count, args.highlight_words)


def _names(inputs: list[tuple[str, object, str | None]]) -> list[str]:
    """Output names: a file's stem (a/x.wav -> x), ``say0``, ``say1``, ... for ``--say``."""
    names = [Path(n).stem if said is None else n for n, _, said in inputs]
    seen: dict[str, str] = {}
    for (given, _, _), stem in zip(inputs, names):
        if stem in seen:
            raise UsageError(
                f"{seen[stem]} and {given} would both be written as {stem}.*: rename one, "
                "or run them with different --output-dir"
            )
        seen[stem] = given
    return names


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hooked_asr.files import atomic_write_bytes

    fmt = "json" if args.json else args.output_format
    subtitles = _check(args, fmt)
    inputs = audio_inputs(args)
    names = _names(inputs)
    formats = list(FORMATS) if fmt == "all" else [fmt]
    out_dir = Path(args.output_dir) if args.output_dir is not None else None
    if out_dir is None and len(inputs) > 1 and fmt not in ("txt", "json"):
        raise UsageError(f"{len(inputs)} inputs as {fmt}: add --output-dir DIR for one file per input")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable folder fails now, not after the work
    quiet = args.no_progress
    model = load_model_from_args(args)
    temps = args.temperature[0] if len(args.temperature) == 1 else tuple(args.temperature)
    collected = []
    bar = tqdm(total=len(inputs), desc="transcribing", unit="file", disable=quiet or len(inputs) < 2, file=sys.stderr)
    for (given, audio, _), name in zip(inputs, names):
        bar.set_postfix_str(name)
        # timestamps on whatever the format, as openai-whisper: one decoding behind every format
        out = model.transcribe(
            audio,
            language=args.language,
            task=args.task,
            beam_size=args.beam_size,
            temperature=temps,
            word_timestamps=args.word_timestamps,
            initial_prompt=args.initial_prompt,
            without_timestamps=False,
            allow_silence=args.allow_silence,
            progress=False if quiet else None,
        )
        bar.update()
        if out_dir is not None:
            for f in formats:
                text = WRITERS[f](out, subtitles, name=given) if f == "json" else WRITERS[f](out, subtitles)
                atomic_write_bytes(out_dir / f"{name}.{f}", text.encode("utf-8"))
                print(out_dir / f"{name}.{f}")
        elif len(inputs) == 1:
            text = WRITERS[fmt](out, subtitles, name=given) if fmt == "json" else WRITERS[fmt](out, subtitles)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        elif fmt == "txt":
            print(f"{given}: {' '.join(s.text.strip() for s in out.segments if s.text.strip())}")
        else:
            collected.append(json.loads(WRITERS["json"](out, subtitles, name=given)))
        sys.stdout.flush()
    bar.close()
    if collected:
        print(json.dumps(collected, ensure_ascii=False))
    return 0


__all__ = ["add_parser", "run"]
