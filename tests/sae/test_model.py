"""SAE maths: TopK sparsity, unit-norm decoder under training, planted dictionary recovery, io."""

from __future__ import annotations

import torch

from hooked_asr.sae import (
    GeneratedFrameSource,
    SAEConfig,
    SAETrainer,
    SparseAutoencoder,
    TensorFrameSource,
    TrainConfig,
    identity_sae,
    load_sae,
    save_sae,
)


def planted_source(d: int = 32, n_atoms: int = 48, k: int = 3, seed: int = 0):
    """Frames that are sums of ``k`` of ``n_atoms`` unit atoms with positive coefficients."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=-1, keepdim=True)

    def make(i: int) -> torch.Tensor:
        gi = torch.Generator().manual_seed(1000 + i)
        idx = torch.rand(512, n_atoms, generator=gi).argsort(-1)[:, :k]
        coef = torch.rand(512, k, generator=gi) * 2 + 0.5
        return (coef[..., None] * atoms[idx]).sum(1)

    return atoms, GeneratedFrameSource(make, d_in=d)


def test_topk_keeps_exactly_k_active():
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=5))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU removes none of the top k
    x = torch.randn(3, 7, 16)
    f = sae.encode(x)
    assert ((f > 0).sum(-1) == 5).all()
    # The survivors are the k largest pre-activations, unchanged.
    pre = sae.encode_pre(x)
    top = pre.topk(5, dim=-1).values
    assert torch.equal(f.sort(-1, descending=True).values[..., :5], top)


def test_topk_never_exceeds_k_with_negative_preactivations():
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=8))
    f = sae.encode(torch.randn(100, 16))
    assert ((f > 0).sum(-1) <= 8).all() and (f >= 0).all()


def test_decoder_rows_unit_norm_after_every_step():
    for arch in ("topk", "relu"):
        sae = SparseAutoencoder(SAEConfig(d_in=12, d_sae=40, architecture=arch, k=4, dead_after_frames=64))
        trainer = SAETrainer(
            sae,
            TrainConfig(
                total_frames=10 * 64, batch_size=64, lr=1e-2, resample_every=3, progress=False, buffer_frames=256
            ),
        )
        frames = torch.randn(2000, 12) * 5 + 3
        source = TensorFrameSource(frames, chunk_size=128)
        it = [iter(source)]
        for _ in range(10):
            trainer.step(trainer._next_batch(it, source))
            norms = sae.W_dec.norm(dim=-1)
            assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), arch


def test_planted_sparse_dictionary_is_recovered():
    atoms, source = planted_source()
    for arch, l1, lr in (("topk", 0.0, 3e-3), ("relu", 1.0, 1e-2)):
        source.position = 0
        sae = SparseAutoencoder(
            SAEConfig(d_in=32, d_sae=96, architecture=arch, k=3, l1_coefficient=l1, dead_after_frames=10_000), seed=1
        )
        SAETrainer(
            sae, TrainConfig(total_frames=120_000, batch_size=256, lr=lr, progress=False, buffer_frames=4096)
        ).train(source)
        # Each planted atom has a learned decoder row pointing the same way.
        best = (atoms @ sae.W_dec.detach().T).max(dim=1).values
        assert best.mean() > 0.95 and (best > 0.9).float().mean() >= 0.9, (arch, best)


def test_identity_dictionary_reconstructs_exactly():
    for arch in ("relu", "topk"):
        sae = identity_sae(24, architecture=arch)
        x = torch.randn(5, 30, 24) * 3
        assert torch.equal(sae(x), x)


def test_error_term_mode_is_exactly_the_input():
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=32, k=4))
    sae.use_error_term = True
    x = torch.randn(4, 16)
    _, cache = sae.run_with_cache(x)
    assert torch.equal(sae(x), x)
    # hook_sae_error is what the reconstruction misses.
    assert torch.allclose(cache["hook_sae_error"] + cache["hook_sae_recons"], x, atol=1e-5)


def test_save_load_roundtrip_and_folded_scale(tmp_path):
    sae = SparseAutoencoder(
        SAEConfig(d_in=16, d_sae=32, architecture="relu", hook_name="encoder.blocks.1.hook_resid_post")
    )
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    sae.set_input_scale_from(torch.randn(100, 16) * 7)
    x = torch.randn(9, 16) * 7
    want = sae(x)
    loaded = load_sae(save_sae(sae, tmp_path / "a"))
    assert torch.allclose(loaded(x), want, atol=1e-5) and loaded.cfg == sae.cfg
    # Folding the scale into the weights keeps the function (SAELens export).
    loaded.fold_input_scale()
    assert float(loaded.input_scale) == 1.0
    assert torch.allclose(loaded(x), want, atol=1e-4)
    import json

    meta = json.loads((save_sae(loaded, tmp_path / "b") / "cfg.json").read_text())
    assert meta["architecture"] == "standard" and meta["normalize_activations"] == "none"
    assert meta["metadata"]["hook_name"] == "encoder.blocks.1.hook_resid_post"


def test_sparse_topk_decode_equals_dense_decode():
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=6), seed=4)
    with torch.no_grad():
        sae.b_dec.normal_()
    sae.input_scale.fill_(0.5)
    x = torch.randn(20, 16)
    idx, vals = sae.topk_sparse(sae.encode_pre(x))
    # decode_sparse works in scaled units; decode divides by s.
    assert torch.allclose(sae.decode_sparse(idx, vals) / sae.input_scale, sae.decode(sae.encode(x)), atol=1e-5)
