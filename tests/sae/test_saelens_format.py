"""A saved SAE is a folder SAELens opens without edits, and computes our function.

SAELens is not installed here (``pip install sae-lens`` would replace transformer-lens 4.x
by 3.x), so the checks below are written from its source (sae_lens 6.54, ``saes/sae.py``,
``saes/topk_sae.py``, ``loading/pretrained_sae_loaders.py``): the strict
``load_state_dict`` over ``W_enc, b_enc, W_dec, b_dec``, the ``normalize_activations``
whitelist of ``SAEConfig.__post_init__``, the dataclass fields ``from_dict`` keeps, and the
forward ``x_hat = act((x - b_dec) W_enc + b_enc) W_dec + b_dec`` with ``act`` = ReLU or
TopK-then-ReLU. That forward is re-implemented here from the file alone (no hooked_asr code)
and must match ``SparseAutoencoder`` to 1e-5.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hooked_asr.sae import SAEConfig, SparseAutoencoder, load_sae, save_sae

# SAELens 6.54 SAEConfig.__post_init__ accepts only these
SAELENS_NORMALIZE = {"none", "expected_average_only_in", "constant_norm_rescale", "layer_norm", "covariance_whitening"}
SAELENS_FIELDS = {
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "metadata",
}
SAELENS_TOPK_FIELDS = SAELENS_FIELDS | {"k", "rescale_acts_by_decoder_norm"}


def _saelens_forward(folder, x: torch.Tensor) -> torch.Tensor:
    """SAELens's inference forward (no error term), from cfg.json and the weights file only."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    assert cfg["normalize_activations"] == "none"  # so run_time_activation_norm_fn_in/out are identities
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "topk":
        vals, idx = torch.topk(pre, k=cfg["k"], dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    else:
        acts = pre.relu()
    return acts @ w["W_dec"] + w["b_dec"]


def _trained_like(architecture: str, seed: int = 0) -> SparseAutoencoder:
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=24,
            d_sae=96,
            architecture=architecture,
            k=7,
            hook_name="encoder.blocks.2.hook_resid_post",
            model_name="whisper-tiny.en",
        ),
        seed=seed,
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(96, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(24, generator=g))
    # activations of encoder residuals have norms in the tens-hundreds: a scale far from 1
    sae.set_input_scale_from(torch.randn(256, 24, generator=g) * 40)
    assert abs(float(sae.input_scale) - 1.0) > 0.5
    return sae


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_saved_folder_passes_saelens_loading_checks(architecture, tmp_path):
    folder = save_sae(_trained_like(architecture), tmp_path / "sae")
    w = load_file(str(folder / "sae_weights.safetensors"))
    # strict load_state_dict: exactly SAELens's parameters (no input_scale buffer)
    assert set(w) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert w["W_enc"].shape == (24, 96) and w["W_dec"].shape == (96, 24)
    assert w["b_enc"].shape == (96,) and w["b_dec"].shape == (24,)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["normalize_activations"] in SAELENS_NORMALIZE and cfg["normalize_activations"] == "none"
    assert cfg["architecture"] == ("topk" if architecture == "topk" else "standard")
    # v6 layout (no pre-6 conversion), and every field its config dataclass needs is there
    assert cfg["metadata"]["sae_lens_version"] >= "6"
    assert (SAELENS_TOPK_FIELDS if architecture == "topk" else SAELENS_FIELDS) <= set(cfg)
    assert cfg["metadata"]["hook_name"] == "encoder.blocks.2.hook_resid_post"
    if architecture == "topk":
        assert cfg["k"] == 7 and cfg["rescale_acts_by_decoder_norm"] is False


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_saelens_forward_equals_ours_and_round_trip(architecture, tmp_path):
    sae = _trained_like(architecture, seed=3)
    x = torch.randn(50, 24, generator=torch.Generator().manual_seed(9)) * 40
    want = sae(x)
    folder = save_sae(sae, tmp_path / "sae")
    # what SAELens computes from the file is our reconstruction
    got = _saelens_forward(folder, x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max().clamp_min(1.0)
    # the same TopK choice (folding the scale must not change which features fire)
    if architecture == "topk":
        w = load_file(str(folder / "sae_weights.safetensors"))
        theirs = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).topk(7, dim=-1).indices.sort(-1).values
        ours = sae.encode_pre(x).topk(7, dim=-1).indices.sort(-1).values
        assert torch.equal(theirs, ours)
    # and load_sae gives back the original parametrisation (unit-norm rows, the scale)
    back = load_sae(folder)
    assert back.cfg == sae.cfg
    assert float(back.input_scale) == pytest.approx(float(sae.input_scale), rel=1e-7)
    assert torch.allclose(back.W_dec.norm(dim=-1), torch.ones(96), atol=1e-5)
    assert (back(x) - want).abs().max() <= 1e-5 * want.abs().max().clamp_min(1.0)


def test_plain_saelens_folder_loads(tmp_path):
    """A folder SAELens itself wrote (v6 cfg, no hooked_asr keys) loads with scale 1."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w = {
        "W_enc": torch.randn(8, 16, generator=g),
        "b_enc": torch.randn(16, generator=g),
        "W_dec": torch.randn(16, 8, generator=g),
        "b_dec": torch.randn(8, generator=g),
    }
    folder = tmp_path / "sl"
    folder.mkdir()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": 8,
                "d_sae": 16,
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "reshape_activations": "none",
                "architecture": "topk",
                "k": 3,
                "rescale_acts_by_decoder_norm": False,
                "metadata": {
                    "sae_lens_version": "6.54.12",
                    "hook_name": "encoder.blocks.0.hook_resid_post",
                    "model_name": "m",
                },
            }
        )
    )
    sae = load_sae(folder)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 3 and sae.cfg.hook_name == "encoder.blocks.0.hook_resid_post"
    x = torch.randn(5, 8, generator=g)
    assert torch.allclose(sae(x), _saelens_forward(folder, x), atol=1e-5)
    # a normalisation we cannot reproduce is refused, not silently ignored
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["normalize_activations"] = "layer_norm"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="layer_norm"):
        load_sae(folder)
