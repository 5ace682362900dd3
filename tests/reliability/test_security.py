"""Nothing executes from a checkpoint: no pickle anywhere, and the SAE trainer's state is
safetensors + JSON, so a crafted file in a checkpoint folder runs no code."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from hooked_asr.sae import SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig

ROOT = Path(__file__).resolve().parents[2]

# Each pattern is a way to unpickle (or to write a pickle someone must later unpickle).
UNSAFE = {
    "torch.load": re.compile(r"\btorch\.load\s*\("),
    "torch.save": re.compile(r"\btorch\.save\s*\("),
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|marshal)\b|\bpickle\.loads?\s*\(", re.M),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
}


def test_no_unpickling_anywhere_in_the_package_or_scripts():
    hits = []
    for folder in ("hooked_asr", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for what, pat in UNSAFE.items():
                for m in pat.finditer(text):
                    line = text[: m.start()].count("\n") + 1
                    hits.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not hits, "pickle can run code when loaded; use safetensors + JSON:\n" + "\n".join(hits)


class _Payload:
    """Unpickling this creates a marker file: stands in for an arbitrary command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _trained(tmp_path: Path) -> tuple[SAETrainer, TensorFrameSource]:
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(600, 8, generator=g)
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, architecture="relu"), seed=0)
    source = TensorFrameSource(frames, chunk_size=100)
    trainer = SAETrainer(
        sae,
        TrainConfig(
            total_frames=4 * 32, batch_size=32, buffer_frames=128, progress=False, checkpoint_dir=str(tmp_path)
        ),
    )
    trainer.train(source)
    return trainer, source


def test_crafted_trainer_state_in_a_checkpoint_folder_runs_no_code(tmp_path):
    _trained(tmp_path)
    marker = tmp_path / "pwned"
    # A hostile file under every name a trainer state has had, in the folder and any sub-folder.
    for folder in [tmp_path, *[p for p in tmp_path.rglob("*") if p.is_dir()]]:
        for name in ("trainer_state.pt", "optimizer.pt", "state.pkl"):
            (folder / name).write_bytes(pickle.dumps(_Payload(str(marker))))
    try:
        SAETrainer.resume(tmp_path, TensorFrameSource(torch.zeros(10, 8)))
    except Exception:  # refusing is fine; running the payload is not
        pass
    assert not marker.exists(), "resuming unpickled a file from the checkpoint folder"


def test_old_pickled_trainer_state_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "trainer_state.pt").write_bytes(pickle.dumps(_Payload(str(tmp_path / "pwned"))))
    with pytest.raises(FileNotFoundError, match="pickle"):
        SAETrainer.resume(tmp_path, TensorFrameSource(torch.zeros(10, 8)))
    assert not (tmp_path / "pwned").exists()
