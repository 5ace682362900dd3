"""``hooked-asr``: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (registers its arguments and
sets ``func``) so that adding a command never touches this file's logic. Subcommand modules
import the library inside ``run``, so ``hooked-asr --help`` and ``--version`` import no torch.

Every user error ends here as one line ``hooked-asr: error: ...`` and exit code 2: argparse's
own errors, the library's input errors (bad audio, checkpoints, stores, ``ValueError`` from
option checks, which :func:`_cli_message` rewrites to name the flag) and files that cannot be
read or written. ``HOOKED_ASR_TRACEBACK=1`` raises instead, with the full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from typing import NoReturn


class UsageError(ValueError):
    """A command line that cannot run as given (the message names the flag to change)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already says it (or there is none to say)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``hooked-asr: error: ...`` (exit code 2), usage left to ``--help``;
    subcommands inherit the class, hence the help formatter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("hooked-asr").strip()
        print(f"hooked-asr: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from hooked_asr import __version__

    parser = _Parser(prog="hooked-asr", description="Mechanistic interpretability for speech recognition.")
    parser.add_argument("--version", action="version", version=f"hooked-asr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input, not a bug: printed as one line, not a traceback.
    ``ValueError`` covers the library's option checks (and ComponentError, AudioError, ...),
    ``IndexError`` out-of-range ids (SAE features), ``OSError`` unreadable or unwritable paths."""
    from hooked_asr.activations.store import StoreError
    from hooked_asr.audio import AudioError
    from hooked_asr.loading.ct2 import CT2FormatError
    from hooked_asr.loading.hf import CheckpointError
    from hooked_asr.loading.whisper_weights import WeightConversionError

    return (
        AudioError,
        CheckpointError,
        CT2FormatError,
        StoreError,
        WeightConversionError,
        ValueError,
        IndexError,
        OSError,
    )


def _flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, tuple[str, bool]]:
    """``dest -> (--flag, is a switch)`` for the subcommand that ``argv`` runs (nested subcommands included)."""
    flags: dict[str, tuple[str, bool]] = {}
    words = list(sys.argv[1:] if argv is None else argv)
    p: argparse.ArgumentParser | None = parser
    while p is not None:
        nxt = None
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                nxt = next((a.choices[w] for w in words if w in a.choices), None)
            elif a.option_strings:
                flags[a.dest] = (max(a.option_strings, key=len), a.nargs == 0)
        p = nxt
    return flags


def _cli_message(e: BaseException, flags: dict[str, tuple[str, bool]], args: argparse.Namespace | None = None) -> str:
    """One line; a Python option name the library's message uses (``beam_size=-1``,
    ``alpha must ...``) becomes the command's flag (``--beam-size -1``, ``--alpha must ...``);
    a file that cannot be written inside an output flag's folder names that flag."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.strerror}: {e.filename}"
        for dest in ("out", "output_dir"):
            where = getattr(args, dest, None)
            if where and dest in flags and str(e.filename).startswith(str(where).rstrip("/")):
                msg += f" (choose a writable {flags[dest][0]})"
    else:
        msg = str(e)
    for dest, (flag, switch) in flags.items():
        if switch:  # allow_silence=True -> --allow-silence
            msg = re.sub(rf"(?<![\w.-]){re.escape(dest)}=True\b", flag, msg)
        msg = re.sub(rf"(?<![\w.-]){re.escape(dest)}=", f"{flag} ", msg)
        msg = re.sub(rf"(?<![\w.-]){re.escape(dest)}(?= must\b)", flag, msg)
    if "allow_silence" not in flags:  # only transcribe has the switch: point there, not at Python
        msg = re.sub(
            r"[^.;]*\ballow_silence=True\b[^.;]*", " hooked-asr transcribe --allow-silence transcribes it", msg
        )
    return " ".join(msg.split())


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; a user error prints ``hooked-asr: error: ...`` and returns 2
    (set ``HOOKED_ASR_TRACEBACK=1`` for the full traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        if os.environ.get("HOOKED_ASR_TRACEBACK"):
            raise
        print(f"hooked-asr: error: {_cli_message(e, _flags(parser, argv), args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
