"""Every experiment script of scripts/ runs end to end on the real whisper-tiny.en with small
settings, writes its tables and figures, prints a table with the paper's column names (the
paper's numbers beside ours), and its numbers obey a property that must hold whatever the
model hears. (The full-size runs and their numbers are in docs/RESULTS.md.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _json(path: Path):
    return json.loads(path.read_text())


def _header(stdout: str, *columns: str) -> None:
    """A printed Markdown table has exactly these leading column names."""
    want = "| " + " | ".join(columns) + " |"
    assert any(line.startswith(want) for line in stdout.splitlines()), (
        f"no table starting {want!r} in:\n{stdout[-3000:]}"
    )


def _check_lens(out: Path, stdout: str) -> None:
    _header(stdout, "quantity", "paper (large-v3, §4.4)", "ours")
    _header(stdout, "language", "tokens", "mean saturation layer")
    _header(stdout, "encoder layer", "empty", "loop", "prefix of final", "WER vs final", "most frequent phrase (files)")
    row = _json(out / "summary.json")[0]
    p = [float(v) for v in row["p_final_by_layer"].split()]
    assert len(p) == row["decoder_layers"] and p[-1] > p[0]
    # the decoder reading the last encoder layer is the ordinary transcript
    assert float(row["encoder_lens_wer_by_layer"].split()[-1]) == 0.0
    assert list(out.glob("**/*.png"))


def _check_acoustic_contextual(out: Path, stdout: str) -> None:
    _header(stdout, "Metric", "paper Whisper (large-v3)", "paper Qwen2-Audio")
    t2 = _json(out / "table2.json")
    assert [r["Metric"] for r in t2] == ["Error Cases", "Restored Acc.", "Via Encoder", "Via Decoder"]
    assert t2[0]["paper Whisper (large-v3)"] == "153/700 (21.8%)"
    row = _json(out / "table.json")[0]
    fractions = [v for k, v in row.items() if k.startswith("restored via ") and v == v]
    assert row["n"] == 2 and all(0.0 <= v <= 1.0 for v in fractions)
    assert (out / "restored.png").exists()


def _check_attribution(out: Path, stdout: str) -> None:
    summary = _json(out / "summary.json")
    assert summary["n_components"] > 0 and -1.0 <= summary["pooled"]["spearman"] <= 1.0
    assert (out / "components.csv").exists() and (out / "scatter.png").exists()


def _check_eap(out: Path, stdout: str) -> None:
    summary = _json(out / "summary.json")
    # EAP's edge scores summed per node are attribution patching, whatever the input
    assert (
        summary["eap_minus_attribution_max"] < 1e-3 and -1.0 <= summary["spearman_vs_real"]["pooled"]["eap_ig"] <= 1.0
    )
    assert (out / "faithfulness.csv").exists() and (out / "circuit.png").exists() and (out / "circuit.json").exists()


def _check_repetition(out: Path, stdout: str) -> None:
    import pandas as pd

    _header(
        stdout,
        "component",
        "paper (large-v3, §4.5)",
        "ours: component",
        "% resolved (patch, clean ref)",
        "% resolved (zero ablation)",
    )
    items = pd.read_csv(out / "items.csv")
    assert len(items) == 4 and set(items["kind"]) == {"code_switch", "fragmented", "noised", "repeated_word"}


def _check_sae_train(out: Path, stdout: str) -> None:
    _header(stdout, "category", "paper (Pluth et al. 2026)", "ours: features")
    m = _json(out / "metrics.json")
    # every labelled feature is counted in exactly one of the paper's kinds (or "mixed")
    assert sum(len(v) for v in m["feature_categories"].values()) == len(m["features"])
    rec = m["reconstruction"]
    assert rec["l0"] == pytest.approx(8.0)  # TopK: exactly k features fire on every frame
    assert 0.0 <= rec["dead_fraction"] <= 1.0 and rec["fvu"] >= 0.0  # (6 sentences: FVU near 1 is expected)
    assert (out / "browser" / "index.html").exists()


def _check_probe_summary(out: Path, stdout: str) -> None:
    import pandas as pd

    if "§4.3" in stdout:  # encoder semantics: held-out words per layer beside the paper's last layer
        _header(stdout, "pair")
        assert "paper, last layer" in stdout and "held-out words (never in training)" in stdout
    else:
        _header(
            stdout,
            "task",
            "site",
            "paper layer (of 32)",
            "paper accuracy",
            "our best layer (depth)",
            "Test Acc",
            "Train Acc",
            "F1",
        )
        assert "| speech | decoder (final token)" in stdout  # the paper's speech claim is about the decoder
    rows = pd.read_csv(out / "summary.csv")
    assert len(rows) and rows["test_acc"].between(0, 1).all() and rows["train_acc"].between(0, 1).all()
    # one best layer per task, and it is the layer with the highest held-out accuracy
    key = "task" if "task" in rows else rows.columns[0]
    for _, group in rows.groupby(key):
        assert group["best"].sum() == 1
        assert group.loc[group["best"], "test_acc"].iloc[0] == group["test_acc"].max()
    assert list(out.glob("**/probe_sweep.png"))


def _check_hallucination(out: Path, stdout: str) -> None:
    import pandas as pd

    _header(stdout, "Layer", "Test Acc", "Train Acc", "F1", "paper Layer (of 32)", "paper Test Acc")
    _header(stdout, "zero-WER", "highest-WER", "mean words zero-WER", "mean words highest-WER", "KS statistic")
    data = pd.read_csv(out / "dataset.csv")
    assert (data.loc[data["label"] == 0, "wer"] == 0).all()  # "correct" means a perfect transcript
    assert (data.loc[data["label"] == 1, "wer"] > 0).all()
    assert (data["label"] == 1).sum() >= (data["label"] == 0).sum()  # 150 + 200 in the paper


def _check_nonspeech(out: Path, stdout: str) -> None:
    _header(stdout, "method", "split", "hallucination rate", "n non-speech", "speech WER", "n speech", "chosen")
    rep = _json(out / "table.json")
    rate = {(r["method"], r["split"]): r["hallucination rate"] for r in rep["rows"]}
    # what was chosen on the select half lowers the hallucination rate there (head masking or steering)
    remedies = ("head masking", "SAE steering", "probe direction")
    assert min(rate[(m, "select")] for m in remedies) < rate[("as is", "select")], rate
    # and the report states every method's rate on the held-out half, which influenced no choice
    assert set(rep["held_out_hallucination_rate"]) == {"as is", "probe monitor", *remedies}
    assert all(0.0 <= v <= 1.0 for v in rep["held_out_hallucination_rate"].values())
    assert (out / "nonspeech_hallucination.png").exists() and (out / "table.csv").exists()


def _check_sae_steering(out: Path, stdout: str) -> None:
    _header(stdout, "quantity", "paper (Pluth et al. 2026, summary)", "ours")
    m = _json(out / "metrics.json")
    feats = m["language_features"]
    assert set(feats) == {"en", "de"} and len(set(map(str, feats.values()))) == 2  # one feature per language
    assert all(0.0 <= m[k] <= 1.0 for k in ("steer_success_rate", "mean_p_tgt_before", "mean_p_tgt_after"))


CASES: list[tuple[str, list[str], Callable[[Path], None]]] = [
    ("lens_experiments.py", ["--models", "whisper-tiny.en", "--n-sentences", "2", "--tuned-steps", "5"], _check_lens),
    ("acoustic_contextual.py", ["--n", "2", "--max-new-tokens", "20"], _check_acoustic_contextual),
    ("attribution_vs_patching.py", ["--n", "1"], _check_attribution),
    ("eap_vs_patching.py", ["--n", "1", "--steps", "2", "--ks", "10", "--curve-ks", "50"], _check_eap),
    (
        "repetition_circuits.py",
        ["--n-per-kind", "1", "--max-new-tokens", "40", "--interventions", "patch"],
        _check_repetition,
    ),
    (
        "sae_train.py",
        [
            "--train-sentences",
            "6",
            "--epochs",
            "1",
            "--eval-sentences",
            "1",
            "--n-label",
            "1",
            "--expansion",
            "2",
            "--k",
            "8",
            "--store",
        ],
        _check_sae_train,
    ),
    (
        "sae_steering.py",
        ["--langs", "en", "de", "--epochs", "0.5", "--n-test", "1", "--expansion", "2", "--k", "8"],
        _check_sae_steering,
    ),
    ("probing_enrichment.py", ["--n", "4"], _check_probe_summary),
    ("encoder_semantics.py", ["--n", "4"], _check_probe_summary),
    ("hallucination_monitoring.py", ["--n", "4", "--max-new-tokens", "32"], _check_hallucination),
    (
        "nonspeech_hallucination.py",
        [
            "--n-per-kind",
            "1",
            "--n-speech",
            "1",
            "--kinds",
            "white",
            "tone",
            "music",
            "silence",
            "--max-heads",
            "6",
            "--sae-scales",
            "4",
            "--sae-adds",
            "--betas",
            "1",
            "--epochs",
            "2",
            "--max-new-tokens",
            "16",
        ],
        _check_nonspeech,
    ),
]


@pytest.mark.parametrize("script,args,check", CASES, ids=[c[0] for c in CASES])
def test_script_runs_with_small_settings(script, args, check, tmp_path):
    out = tmp_path / "out"
    # the scripts import this checkout's hooked_asr (scripts/_common.py puts the root first on sys.path)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.exists() and any(out.iterdir())
    check(out, proc.stdout)
