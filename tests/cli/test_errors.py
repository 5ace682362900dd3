"""Every user error of the CLI is one line ``hooked-asr: error: ...`` with exit code 2 (issue 28,
item 10), the traceback only with ``HOOKED_ASR_TRACEBACK=1``, and every flag a message
suggests exists on that command."""

from __future__ import annotations

import argparse
import re

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved random SAE for tiny.en and a path that cannot be a folder (a file's child:
    root ignores permissions, so chmod cannot make one read-only here)."""
    from hooked_asr.sae import SAEConfig, SparseAutoencoder, save_sae

    root = tmp_path_factory.mktemp("cli_errors")
    save_sae(
        SparseAutoencoder(
            SAEConfig(
                d_in=384,
                d_sae=768,
                architecture="topk",
                k=8,
                hook_name="encoder.blocks.1.hook_resid_post",
                model_name="whisper-tiny.en",
            )
        ),
        root / "sae",
    )
    (root / "afile").write_text("")
    return root


@pytest.fixture
def cli(whisper_tiny_en, monkeypatch):
    from hooked_asr.cli import main

    monkeypatch.setattr("hooked_asr.loading.registry.load_model", lambda *a, **k: whisper_tiny_en)
    return main


CASES = {
    "english-only model": (["transcribe", "--say", "hello", "--language", "fr"], "--language"),
    "negative beam": (["transcribe", "--say", "hello", "--beam-size", "-1"], "--beam-size -1"),
    "negative temperature": (["transcribe", "--say", "hello", "--temperature", "-1"], "--temperature"),
    "unknown format": (["transcribe", "a.wav", "--output-format", "xml"], "invalid choice: 'xml'"),
    "all to stdout": (["transcribe", "--say", "hi", "-f", "all"], "--output-dir"),
    "line width without words": (["transcribe", "--say", "hi", "--max-line-width", "20"], "--word-timestamps"),
    "empty --say (transcribe)": (["transcribe", "--say", ""], "--say ''"),
    "empty --say (lens)": (["lens", "--say", ""], "--say ''"),
    "empty --say (explore)": (["explore", "--say", ""], "--say ''"),
    "missing file": (["transcribe", "nope.wav"], "nope.wav"),
    "alpha nan": (["patch", "--say", "hi", "--alpha", "nan", "--components", "decoder.blocks.0.mlp"], "--alpha"),
    "batch size 0": (["patch", "--say", "hi", "--batch-size", "0"], "--batch-size"),
    "layer 99": (["patch", "--say", "hi", "--layers", "99"], "the decoder has 4 blocks (0-3)"),
    "bad component": (["patch", "--say", "hi", "--components", "decoder.blocks.0.mlpx"], "decoder.blocks.0.mlpx"),
    "SAE feature out of range": (["sae", "steer", "{root}/sae", "--say", "hi", "--feature", "99999"], "0-767"),
    "unwritable --out (patch)": (
        ["patch", "--say", "hi", "--components", "decoder.blocks.0.mlp", "--out", "{root}/afile/x"],
        "writable --out",
    ),
    "unwritable --out (lens)": (
        ["lens", "--say", "hi", "--no-encoder-lens", "--out", "{root}/afile/x"],
        "writable --out",
    ),
    "unwritable --output-dir": (["transcribe", "--say", "hi", "-o", "{root}/afile/x"], "writable --output-dir"),
    "missing SAE": (["sae", "eval", "{root}/none", "--say", "hi"], "none"),
}


def _flags_of(argv: list[str]) -> set[str]:
    """Every option string of the (sub)command ``argv`` runs, its parents' included."""
    from hooked_asr.cli import build_parser

    out: set[str] = set()
    p = build_parser()
    while p is not None:
        nxt = None
        for a in p._actions:
            out |= set(a.option_strings)
            if isinstance(a, argparse._SubParsersAction):
                nxt = next((a.choices[w] for w in argv if w in a.choices), None)
        p = nxt
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_with_exit_code_2(case, cli, setup, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HOOKED_ASR_TRACEBACK", raising=False)
    monkeypatch.chdir(tmp_path)  # default output folders (results/patch, ...) land here
    argv, expected = CASES[case]
    argv = [a.format(root=setup) for a in argv] + (["--no-progress"] if argv[0] == "patch" else [])
    try:
        code = cli(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("hooked-asr: error: "), err
    assert expected in err[0], err
    # every flag the message suggests exists on this command
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", err[0]):
        assert flag in _flags_of(argv), (flag, err[0])


def test_traceback_on_request(cli, monkeypatch):
    monkeypatch.setenv("HOOKED_ASR_TRACEBACK", "1")
    with pytest.raises(ValueError, match="beam_size=-1"):
        cli(["transcribe", "--say", "hello", "--beam-size", "-1"])


def test_python_option_names_become_flags():
    from hooked_asr.cli import _cli_message

    flags = {
        "beam_size": ("--beam-size", False),
        "allow_silence": ("--allow-silence", True),
        "alpha": ("--alpha", False),
    }
    assert _cli_message(ValueError("beam_size=-1: must be >= 1"), flags) == "--beam-size -1: must be >= 1"
    assert (
        _cli_message(ValueError("x is silent. Pass allow_silence=True to study it"), flags)
        == "x is silent. Pass --allow-silence to study it"
    )
    assert (
        _cli_message(ValueError("alpha must be finite; encoder_alpha=2 and alphabet= stay"), flags)
        == "--alpha must be finite; encoder_alpha=2 and alphabet= stay"
    )
    # a command without the switch points at the one that has it
    assert "hooked-asr transcribe --allow-silence" in _cli_message(
        ValueError("x is silent. Pass allow_silence=True"), {}
    )
