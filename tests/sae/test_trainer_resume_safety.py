"""SAE training resumes only what it started (issue 28, items 2 and 3): paths in the saved
state are relative to the run's own folder, so a copied run resumes into the copy and never
touches the original; resume checks its frame source (hook, model weights, data) against the
checkpoint's and refuses another, naming what differs; an SAE is never trained on frames of
another hook than the one its config names."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hooked_asr.sae import ModelFrameSource, SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig


def _frames(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1200, 8, generator=g) + torch.linspace(-1, 1, 8)


def _trainer(ckpt, total_steps: int, hook: str = "") -> SAETrainer:
    sae = SparseAutoencoder(
        SAEConfig(d_in=8, d_sae=16, architecture="relu", dead_after_frames=10_000, hook_name=hook), seed=1
    )
    return SAETrainer(
        sae,
        TrainConfig(
            total_frames=total_steps * 32,
            batch_size=32,
            buffer_frames=256,
            lr=3e-3,
            checkpoint_dir=str(ckpt),
            checkpoint_every=5,
            progress=False,
            resample_every=0,
        ),
    )


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_copied_run_resumes_into_the_copy_and_leaves_the_original_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _trainer("runs/A", 5).train(TensorFrameSource(_frames(), chunk_size=100))  # a relative checkpoint_dir
    shutil.copytree(tmp_path / "runs/A", tmp_path / "runs/B")
    before = _snapshot(tmp_path / "runs/A")
    meta = json.loads(next((tmp_path / "runs/B").glob("step_*/trainer_state.json")).read_text())
    assert meta["train_config"]["checkpoint_dir"] == "."  # relative to the run's own folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = TensorFrameSource(_frames(), chunk_size=100)
    resumed = SAETrainer.resume(tmp_path / "runs/B", source, total_frames=10 * 32)
    resumed.train(source)
    assert _snapshot(tmp_path / "runs/A") == before
    assert json.loads((tmp_path / "runs/B/latest.json").read_text())["step"] == 10
    assert not (elsewhere / "runs").exists()


def test_resume_on_other_frames_is_refused_naming_the_data(tmp_path):
    _trainer(tmp_path / "run", 5).train(TensorFrameSource(_frames(), chunk_size=100))
    with pytest.raises(ValueError, match=r"other frames.*data"):
        SAETrainer.resume(tmp_path / "run", TensorFrameSource(_frames(seed=1), chunk_size=100))
    SAETrainer.resume(tmp_path / "run", TensorFrameSource(_frames(), chunk_size=100))  # the same frames resume


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return [
        (0.3 * np.sin(np.arange(4000) / (3 + i)) + 0.01 * rng.standard_normal(4000)).astype(np.float32)
        for i in range(2)
    ]


def test_resume_on_another_layer_is_refused_naming_the_hook(tmp_path, model_30s, clips):
    """The issue's case: a --layer 3 run resumed without --layer (another hook of the same width;
    this one-block model has two: the block's input and output)."""
    d = model_30s.cfg.encoder.d_model
    hook1, hook0 = "encoder.blocks.0.hook_resid_post", "encoder.blocks.0.hook_resid_pre"
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, k=4, hook_name=hook1), seed=0)
    SAETrainer(
        sae,
        TrainConfig(
            total_frames=64, batch_size=32, buffer_frames=64, checkpoint_dir=str(tmp_path / "r"), progress=False
        ),
    ).train(ModelFrameSource(model_30s, clips, hook1, batch_size=2))
    with pytest.raises(ValueError, match=r"other frames.*hook_name.*resid_post.*resid_pre"):
        SAETrainer.resume(tmp_path / "r", ModelFrameSource(model_30s, clips, hook0, batch_size=2))
    with pytest.raises(ValueError, match=r"other frames.*audio"):
        SAETrainer.resume(tmp_path / "r", ModelFrameSource(model_30s, clips[::-1], hook1, batch_size=2))


def test_training_an_sae_on_another_hooks_frames_is_refused(model_30s, clips):
    d = model_30s.cfg.encoder.d_model
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, k=4, hook_name="encoder.blocks.0.hook_resid_post"))
    source = ModelFrameSource(model_30s, clips, "encoder.blocks.0.hook_resid_pre", batch_size=2)
    with pytest.raises(ValueError, match=r"encoder.blocks.0.hook_resid_post.*encoder.blocks.0.hook_resid_pre"):
        SAETrainer(sae, TrainConfig(total_frames=64, batch_size=32, buffer_frames=64, progress=False)).train(source)
