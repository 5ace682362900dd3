"""The real SAELens and TransformerLens 3.x beside hooked_asr (issue 26): a saved SAE opens with
``sae_lens.SAE.load_from_disk`` unchanged and encodes/decodes real tiny.en encoder frames as ours
does; the model API runs on TransformerLens 3.9.

Not part of ``tests/``: sae-lens 6.54 requires transformer-lens < 4, so these run in a second
environment (``.ci/ecosystem`` builds it: transformer-lens 3.9 + sae-lens 6.54 + this checkout)."""

from __future__ import annotations

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens", reason="run through .ci/ecosystem (sae-lens needs transformer-lens 3.x)")


@pytest.fixture(scope="module")
def frames():
    """Real encoder frames of whisper tiny.en on espeak-ng speech, [frames, d_model]."""
    import hooked_asr
    from hooked_asr.datasets.espeak import synthesize

    model = hooked_asr.load_model("whisper-tiny.en")
    audio = synthesize("The birch canoe slid on the smooth planks.")
    hook = "encoder.blocks.2.hook_resid_post"
    _, cache = model.run_with_cache(**model.teacher_forced_inputs(audio).kwargs, names_filter=hook)
    return model, hook, cache[hook][0, : len(audio) // 320]


def test_transformer_lens_is_3x_here():
    from importlib.metadata import version

    assert version("transformer-lens").startswith("3."), version("transformer-lens")
    assert version("sae-lens").startswith("6."), version("sae-lens")


def test_model_api_on_transformer_lens_3(frames):
    import hooked_asr
    from hooked_asr.datasets.espeak import synthesize

    model, hook, x = frames
    assert (
        model.transcribe(synthesize("She opened the window and looked at the sea.")).text
        == "She opened the window and looked at the sea."
    )
    assert isinstance(
        model.run_with_cache(**model.teacher_forced_inputs(synthesize("hello")).kwargs, names_filter=hook)[1],
        hooked_asr.ActivationCache,
    )


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_saelens_loads_our_sae_and_computes_our_function(architecture, frames, tmp_path):
    from hooked_asr.sae import SAEConfig, SparseAutoencoder, save_sae

    model, hook, x = frames
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=x.shape[-1],
            d_sae=4 * x.shape[-1],
            architecture=architecture,
            k=16,
            hook_name=hook,
            model_name="whisper-tiny.en",
        ),
        seed=0,
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(sae.cfg.d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(x.mean(0) * 0.05)
    sae.set_input_scale_from(x)  # residual norms in the tens: a scale far from 1, folded on export
    folder = save_sae(sae, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        f_ours, f_theirs = sae.encode(x), theirs.encode(x)
        assert (f_ours > 0).sum() > 0
        torch.testing.assert_close(f_theirs, f_ours, rtol=1e-4, atol=1e-4 * float(f_ours.abs().max()))
        torch.testing.assert_close(
            theirs.decode(f_ours), sae.decode(f_ours), rtol=1e-4, atol=1e-4 * float(x.abs().max())
        )
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-4, atol=1e-4 * float(x.abs().max()))
    assert theirs.cfg.metadata.hook_name == hook
