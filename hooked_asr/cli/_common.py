"""What several subcommands share: the ``--model`` option and loading it, and where the audio
comes from (files, or sentences spoken by espeak-ng with ``--say``).

The leading underscore keeps this module out of the subcommand list (see ``build_parser``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hooked_asr.cli import UsageError


def note(message: str) -> None:
    """A progress line on stderr for a person watching (a terminal): what runs before the first bar."""
    import sys

    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give a whole number >= 1")
    return value


def add_model_argument(p: argparse.ArgumentParser, default_help: str = "whisper-tiny.en") -> None:
    """``--model NAME_OR_PATH`` (None: the registry's default model)."""
    p.add_argument("--model", default=None, help=f"model name or path (default: {default_help})")


def load_model_from_args(args: argparse.Namespace, default: str | None = None) -> Any:
    """The model ``--model`` names, else ``default``, else the registry's default."""
    from hooked_asr.loading.registry import DEFAULT_MODEL, load_model

    name = args.model or default or DEFAULT_MODEL
    if not getattr(args, "no_progress", False):
        note(f"loading {name} ...")  # the first seconds of every command, before any bar
    return load_model(name)


def add_audio_arguments(p: argparse.ArgumentParser, many: bool, audio_help: str) -> None:
    """The audio positional and ``--say`` / ``--voice``: one file or one sentence, or (``many``)
    any number of files and repeatable ``--say``."""
    if many:
        p.add_argument("audio", nargs="*", help=audio_help)
        p.add_argument(
            "--say", action="append", default=[], help="a sentence to synthesise with espeak-ng (repeatable)"
        )
    else:
        p.add_argument("audio", nargs="?", default=None, help=audio_help)
        p.add_argument("--say", default=None, help="synthesise this sentence with espeak-ng instead of reading a file")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice for --say")


def one_audio(args: argparse.Namespace) -> tuple[Any, str]:
    """``(audio, name)`` from exactly one of the file and ``--say`` (then the name is ``say``)."""
    if (args.audio is None) == (args.say is None):
        raise UsageError("give one audio file or --say 'a sentence'")
    if args.say is not None:
        _check_sentences([args.say])
        from hooked_asr.datasets.espeak import synthesize

        return synthesize(args.say, voice=args.voice), "say"
    if not Path(args.audio).exists():
        raise UsageError(f"{args.audio} does not exist: give a wav/flac file or --say 'a sentence'")
    return args.audio, Path(args.audio).stem


def _check_sentences(sentences: list[str]) -> None:
    if any(not s.strip() for s in sentences):
        raise UsageError("--say '': give a sentence with words in it (or an audio file)")


def audio_inputs(args: argparse.Namespace) -> list[tuple[str, Any, str | None]]:
    """``(name, audio, said)`` for every file (audio = its path, said = None), then every
    ``--say`` sentence (``say0``, ``say1``, ...: the synthesised array and the sentence)."""
    if not args.audio and not args.say:
        raise UsageError("give audio files or --say 'a sentence'")
    _check_sentences(args.say)
    inputs: list[tuple[str, Any, str | None]] = [(str(a), a, None) for a in args.audio]
    if args.say:
        from hooked_asr.datasets.espeak import synthesize

        inputs += [(f"say{i}", synthesize(s, voice=args.voice), s) for i, s in enumerate(args.say)]
    return inputs


__all__ = [
    "add_audio_arguments",
    "add_model_argument",
    "note",
    "positive_int",
    "audio_inputs",
    "load_model_from_args",
    "one_audio",
]
