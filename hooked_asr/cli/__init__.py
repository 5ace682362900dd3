"""``hooked-asr``: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (registers its arguments and
sets ``func``) so that adding a command never touches this file's logic.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooked-asr", description="Mechanistic interpretability for speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The library's errors about the user's input: printed as one line, not a traceback."""
    from hooked_asr.activations.store import StoreError
    from hooked_asr.audio import AudioError
    from hooked_asr.loading.ct2 import CT2FormatError
    from hooked_asr.loading.hf import CheckpointError
    from hooked_asr.loading.whisper_weights import WeightConversionError

    return AudioError, CheckpointError, CT2FormatError, StoreError, WeightConversionError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; the library's input errors print ``hooked-asr: error: ...`` and return 2
    (set ``HOOKED_ASR_TRACEBACK=1`` for the full traceback)."""
    import os

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        if os.environ.get("HOOKED_ASR_TRACEBACK"):
            raise
        print(f"hooked-asr: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
