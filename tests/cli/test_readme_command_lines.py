"""Every ``hooked-asr`` command line the README shows uses flags that exist (the README's Python
blocks run end to end in e2e/test_readme.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_line_uses_flags_that_exist():
    import argparse

    from hooked_asr.cli import build_parser

    parser = build_parser()
    lines = re.findall(r"hooked-asr ((?:[a-z]+)(?: [^`#\n|]*)?)", README.read_text())
    assert len(lines) >= 5
    for line in lines:
        words = shlex.split(line.replace('"..."', "x"))
        p = parser
        for w in words:  # walk down the subcommands the line names
            sub = next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
            if sub is None or w not in sub.choices:
                break
            p = sub.choices[w]
        known = {s for a in p._actions for s in a.option_strings}
        for w in words:
            if w.startswith("--"):
                assert w.split("=")[0] in known, f"README: `hooked-asr {line}`: {w} is not an option of {p.prog}"
