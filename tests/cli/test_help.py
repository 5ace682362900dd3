"""``hooked-asr --help``: every option of every command documented with its default, ``--version``,
and no heavy import (torch, transformers, transformer_lens) before a command runs (issue 29:
the import is what made ``--help`` take ~5 s; benchmarks/ times it, this proves the cause gone)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from hooked_asr.cli import build_parser

    found: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        found[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, q in a.choices.items():
                    walk(q, f"{name} {n}")

    walk(build_parser(), "hooked-asr")
    return found


def test_every_option_has_help_and_its_default():
    parsers = _parsers()
    assert {"hooked-asr sae train", "hooked-asr transcribe", "hooked-asr patch"} <= set(parsers)
    for name, p in parsers.items():
        text = " ".join(p.format_help().split())
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert a.help, f"{name} {a.option_strings or a.dest}: no help text"
            if a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS):
                assert f"default: {a.default}" in text or "default" in a.help, (name, a.option_strings, a.default)


def test_sae_train_help_lists_its_options(capsys):
    from hooked_asr.cli import main

    try:
        main(["sae", "train", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "--layer LAYER encoder block whose hook is read (default: 2)",
        "(default: 200000)",
        "--k K active features per frame (topk) (default: 32)",
    ):
        assert text in out


def _run(code: str) -> str:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    ).stdout


def test_help_and_version_import_no_torch():
    out = _run(
        "import sys, contextlib, io\n"
        "from hooked_asr.cli import main\n"
        "for argv in (['--help'], ['--version'], ['transcribe', '--help'], ['sae', 'train', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "    print(buf.getvalue().splitlines()[0])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'transformer_lens', 'numpy') if m in sys.modules))\n"
    )
    lines = out.strip().splitlines()
    import hooked_asr

    assert lines[1] == f"hooked-asr {hooked_asr.__version__}"
    assert lines[-1] == "[]", out


def test_lazy_package_root_still_exports_everything():
    out = _run(
        "import sys, hooked_asr\n"
        "print('torch' in sys.modules)\n"
        "from hooked_asr import act_name, HookedWhisper, load_model, ActivationCache\n"
        "print(act_name('resid_post', 3, 'encoder'), hooked_asr.lens.__name__, sorted(hooked_asr.__all__) == "
        "sorted(n for n in hooked_asr.__all__ if hasattr(hooked_asr, n)))\n"
        "from hooked_asr.loading.registry import _model_class\n"
        "print(_model_class('whisper') is HookedWhisper)\n"
    )
    assert out.split() == ["False", "encoder.blocks.3.hook_resid_post", "hooked_asr.lens", "True", "True"]
