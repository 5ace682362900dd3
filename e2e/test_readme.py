"""Every Python block of the README runs as written, in order, on the real tiny.en, and what it
prints is what the README shows (the ```text block after it: floats within the precision they are
shown at, ``...`` for what is left out); a few printed values are also checked against the library
computed another way. (That every ``hooked-asr`` command line it shows uses flags that exist is
checked in tests/cli/test_readme_command_lines.py.)

Slow (several minutes on two busy cores): the SAE block trains on 40k frames, the probe block
speaks 32 clips, the edge-attribution block patches every edge outside three circuits."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"
FLOAT = r"[-+]?\d+\.\d+(?:e[-+]?\d+)?"


def _blocks() -> list[tuple[str, str | None]]:
    """``(code, what it prints)`` per Python block; the output is the ```text block that follows
    it (only prose in between), or None when the README shows none."""
    text = README.read_text()
    out = []
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        after = re.match(r"((?:(?!```).)*?)```text\n(.*?)```", text[m.end() :], re.S)
        out.append((m.group(1), after.group(2) if after else None))
    return out


def _tolerance(shown: str) -> float:
    """Two units of the last digit shown, or 5 % of the value: what a different BLAS may move."""
    decimals = len(shown.split(".")[1].split("e")[0])
    return max(2 * 10**-decimals, 0.05 * abs(float(shown)))


def _check_output(expected: str, actual: str, where: str) -> None:
    parts = re.split(rf"(\.\.\.|{FLOAT})", expected.strip())
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:  # literal text: any run of whitespace matches any run
            pattern += (
                r"\s+".join(re.escape(w) for w in re.split(r"\s+", part)) if part.strip() else (r"\s*" if part else "")
            )
        elif part == "...":
            pattern += "(.*?)"
        else:
            pattern += f"({FLOAT})"
    m = re.fullmatch(pattern, actual.strip(), re.S)
    assert m, f"{where}: the output differs from the README's\n--- README\n{expected}\n--- printed\n{actual}"
    shown = [p for i, p in enumerate(parts) if i % 2 == 1]
    for want, got in zip(shown, m.groups()):
        if want != "...":
            assert abs(float(got) - float(want)) <= _tolerance(want), f"{where}: printed {got}, README shows {want}"


def test_output_matching_is_strict_where_it_should_be():
    _check_output("a 1.00\n  b ... c 3", "a 1.01 b whatever here c 3", "t")
    for bad in ("a 1.10 b x c 3", "a 1.00 b x c 4", "a 1.00 b x c 3 extra"):
        with pytest.raises(AssertionError):
            _check_output("a 1.00\n  b ... c 3", bad, "t")


def test_every_python_block_runs_and_prints_what_the_readme_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 9 and sum(o is not None for _, o in blocks) >= 8
    assert "run_with_cache" in blocks[0][0] and "encoder_lens" in blocks[1][0] and "sweep(" in blocks[2][0]
    ns: dict = {}
    for i, (code, expected) in enumerate(blocks):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"README.md python block {i}", "exec"), ns)
        if expected is not None:
            _check_output(expected, buf.getvalue(), f"README.md python block {i}")
        if i == 2:
            _check_tour_lens_and_patching(ns)
        if "scores = eap(" in code:
            _check_circuit_baselines(ns, tmp_path)


def _check_tour_lens_and_patching(ns: dict) -> None:
    """What the first three blocks computed, checked another way."""
    model, out = ns["model"], ns["out"]
    # the cached logits are the plain forward's
    torch.testing.assert_close(ns["logits"], model(**ns["inputs"].kwargs), rtol=0, atol=0)
    assert ns["cache"]["decoder.blocks.3.hook_resid_post"].shape[-1] == model.cfg.decoder.d_model
    # the lens's last layer is the model's own choice at every step; the encoder lens's last layer is the transcript
    lens = ns["lens"]
    assert torch.equal(lens.top1[-1], lens.final)
    assert ns["enc"].layers[-1].tokens == list(out.tokens)
    # one row per decoder cross-attention head
    heads = model.cfg.decoder.n_layers * model.cfg.decoder.n_heads
    assert ns["result"].table["component"].nunique() == heads


def _check_circuit_baselines(ns: dict, folder: Path) -> None:
    """The circuits block: no edge patched is the clean run, every edge patched is the reference run
    itself, and its one path changes the logits."""
    import json

    from hooked_asr.patching import white_noise_like

    model, tf, metric, ev = ns["model"], ns["tf"], ns["metric"], ns["ev"]
    with torch.no_grad():
        clean = float(metric(model(**tf.kwargs)))
        ref_run = float(
            metric(model(**model.teacher_forced_inputs(white_noise_like(ns["audio"]), ns["out"].tokens).kwargs))
        )
        assert (ns["logits"] - model(**tf.kwargs)).abs().max() > 1e-4
    assert ev.clean == pytest.approx(clean, abs=1e-5) and ev.reference == pytest.approx(ref_run, abs=1e-3)
    assert json.loads((folder / "circuit.json").read_text())["n_edges"] == 3000 and (folder / "circuit.png").exists()
