"""Trainer: resume from a checkpoint continues exactly; dead features are counted and revived."""

from __future__ import annotations

import torch

from hooked_asr.sae import SAEConfig, SAETrainer, SparseAutoencoder, TensorFrameSource, TrainConfig


def _frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3000, 16, generator=g) * 2 + torch.linspace(-1, 1, 16)


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = dict(total_frames=40 * 64, batch_size=64, lr=3e-3, buffer_frames=512, progress=False)
    full = SparseAutoencoder(SAEConfig(d_in=16, d_sae=48, architecture="relu", dead_after_frames=300), seed=3)
    SAETrainer(full, TrainConfig(**cfg, resample_every=15)).train(TensorFrameSource(_frames(), chunk_size=100))

    part = SparseAutoencoder(SAEConfig(d_in=16, d_sae=48, architecture="relu", dead_after_frames=300), seed=3)
    trainer = SAETrainer(
        part,
        TrainConfig(
            **{**cfg, "total_frames": 40 * 64}, resample_every=15, checkpoint_dir=str(tmp_path), checkpoint_every=17
        ),
    )
    # Stop after 17 steps by training on a copy of the config with fewer steps... simulated
    # crash: run to step 17 by hand, checkpoint, throw the trainer away.
    source = TensorFrameSource(_frames(), chunk_size=100)
    it = [iter(source)]
    trainer._refill(it, source)
    part.set_input_scale_from(trainer.buffer)
    part.b_dec.data.copy_((trainer.buffer * part.input_scale).mean(0))
    for _ in range(17):
        trainer.step(trainer._next_batch(it, source))
    trainer.save_checkpoint(tmp_path, source)
    del trainer

    fresh_source = TensorFrameSource(_frames(), chunk_size=100)
    resumed = SAETrainer.resume(tmp_path, fresh_source)
    assert resumed.state.step == 17 and fresh_source.position == source.position
    resumed.train(fresh_source)
    for name, p in full.state_dict().items():
        assert torch.allclose(p, resumed.sae.state_dict()[name], atol=1e-6), name


def test_dead_features_are_tracked_and_resampled():
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=32, architecture="relu", dead_after_frames=128), seed=0)
    with torch.no_grad():
        sae.b_enc[:8] = -1e4  # features 0-7 can never fire
    trainer = SAETrainer(
        sae,
        TrainConfig(
            total_frames=64 * 100,
            batch_size=64,
            lr=1e-3,
            progress=False,
            init_b_dec=False,
            init_input_scale=False,
            resample_every=0,
        ),
    )
    source = TensorFrameSource(_frames(), chunk_size=100)
    it = [iter(source)]
    for _ in range(3):
        trainer.step(trainer._next_batch(it, source))
    assert trainer.dead_mask()[:8].all() and trainer.frames_since_fired[:8].eq(192).all()
    x = trainer._next_batch(it, source)
    err = x - sae.decode(sae.encode(x))
    n = trainer.resample_dead(x, err.detach())
    assert n >= 8 and not trainer.dead_mask()[:8].any()
    # A resampled feature fires on (at least) the input it was pointed at.
    assert (sae.b_enc[:8] == 0).all()
    norms = sae.W_dec.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_topk_aux_loss_revives_dead_features():
    frames = _frames()
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=2, dead_after_frames=256), seed=0)
    with torch.no_grad():
        sae.b_enc[:32] = -3.0  # half the features start (almost) never chosen
    trainer = SAETrainer(
        sae, TrainConfig(total_frames=64 * 300, batch_size=64, lr=3e-3, progress=False, buffer_frames=512)
    )
    trainer.train(TensorFrameSource(frames, chunk_size=100))
    fired = (sae.encode(frames) > 0).any(0)
    assert fired[:32].float().mean() > 0.5


def test_cached_source_replays_the_same_chunks_without_recomputing(tmp_path):
    from hooked_asr.sae import CachedFrameSource, GeneratedFrameSource

    calls = []

    def make(i):
        calls.append(i)
        return torch.full((3, 4), float(i))

    cached = CachedFrameSource(GeneratedFrameSource(make, d_in=4, n_chunks=3), tmp_path)
    first = [c.clone() for c in cached]
    cached.position = 0
    second = list(cached)
    assert calls == [0, 1, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
