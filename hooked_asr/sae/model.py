"""A sparse autoencoder (SAE) on one activation site, as a hooked module.

With ``s`` a fixed input scale (``sqrt(d_in) / E||x||``, set from data before training so
that hyper-parameters carry across sites whose norms differ by orders of magnitude)::

    x' = s x                                             hook_sae_input sees x (unscaled)
    pre = (x' - b_dec) W_enc + b_enc                     hook_sae_acts_pre    [..., d_sae]
    f = topk_k(relu(pre))   (TopK)   or   relu(pre)   (ReLU + L1)
                                                         hook_sae_acts        [..., d_sae]
    x_hat = (f W_dec + b_dec) / s                        hook_sae_recons      [..., d_in]
    e = x - x_hat_clean                                  hook_sae_error       [..., d_in]

``W_dec`` is ``[d_sae, d_in]``: row ``i`` is feature ``i``'s decoder direction (a column
of the ``d_in x d_sae`` dictionary in the usual maths notation) and is kept at unit norm,
so a feature's activation is the length of its contribution (in scaled units) and the L1
penalty cannot be dodged by shrinking ``f`` and growing ``W_dec``.

``forward(x)`` returns ``x_hat`` (a splice: the model sees only the reconstruction), or,
with ``use_error_term=True``, ``x + (x_hat - x_hat_clean)`` = ``x_hat + e``: the model
sees its own activation plus whatever an edit of ``hook_sae_acts`` / ``hook_sae_recons``
changed. That is the steering mode; with no edit it is exactly the identity.

Saved as ``sae_weights.safetensors`` (``W_enc, b_enc, W_dec, b_dec``, the names and
shapes SAELens uses, with ``s`` folded in) plus a SAELens-format ``cfg.json``, so SAELens's
``SAE.load_from_disk`` opens it unchanged; see :func:`save_sae`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule

from hooked_asr.files import FileCheckError, atomic_save_safetensors, atomic_write_text, read_checked_safetensors
from hooked_asr.hooks import HookPoint

Architecture = Literal["topk", "relu"]


@dataclass
class SAEConfig:
    """Shape and sparsity mechanism of an SAE, and where it reads from.

    ``architecture="topk"`` keeps the ``k`` largest pre-activations per frame (Gao et al.,
    2024) and revives dead features with an auxiliary loss on the ``aux_k`` largest dead
    pre-activations; ``"relu"`` is ReLU with an L1 penalty ``l1_coefficient * sum_i f_i``
    (Bricken et al., 2023), with dead features resampled during training.
    """

    d_in: int
    d_sae: int
    architecture: Architecture = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    aux_k: int | None = None  # default: d_in // 2, as Gao et al.
    aux_coefficient: float = 1.0 / 32
    hook_name: str = ""  # e.g. "encoder.blocks.3.hook_resid_post"
    model_name: str = ""
    dead_after_frames: int = 200_000  # a feature that has not fired for this many frames is dead
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ("topk", "relu"):
            raise ValueError(f"architecture must be 'topk' or 'relu', got {self.architecture!r}")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae} for a TopK SAE, got k={self.k}")

    @property
    def hook_layer(self) -> int | None:
        parts = self.hook_name.split(".")
        return int(parts[2]) if len(parts) > 2 and parts[1] == "blocks" and parts[2].isdigit() else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SAE config keys {unknown}; known: {sorted(names)}")
        return cls(**d)


class SparseAutoencoder(HookedRootModule):
    """An SAE with hook points, so the TransformerLens hook API works on it too:
    ``sae.run_with_cache(x)``, ``sae.hooks(fwd_hooks=[("hook_sae_acts", fn)])``."""

    def __init__(self, cfg: SAEConfig, seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)  # [d_sae, d_in], rows at unit norm
        # Tied initialisation (encoder = decoder transposed) starts every feature alive
        # and aligned with its own direction (Conerly et al., 2024; Gao et al., 2024).
        self.W_enc = nn.Parameter(w_dec.T.clone())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("input_scale", torch.tensor(1.0))  # s: x' = s x
        self.use_error_term = False

        self.hook_sae_input = HookPoint()  # [..., d_in]
        self.hook_sae_acts_pre = HookPoint()  # [..., d_sae]
        self.hook_sae_acts = HookPoint()  # [..., d_sae]  sparse feature activations f
        self.hook_sae_recons = HookPoint()  # [..., d_in]   x_hat
        self.hook_sae_error = HookPoint()  # [..., d_in]   x - x_hat (use_error_term only)
        self.hook_sae_output = HookPoint()  # [..., d_in]   what the model receives
        self.setup()

    # ---- maths -----------------------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def encode_pre(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """``pre = (s x - b_dec) W_enc + b_enc``."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"the SAE reads d_in={self.cfg.d_in} (trained on {self.cfg.hook_name or 'an unnamed hook'!r}) but got "
                f"activations of width {x.shape[-1]}: use an SAE trained on this hook, or the hook it was trained on"
            )
        return (x * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_sae"]:
        """``relu(pre)``, and for TopK only the ``k`` largest per row survive (ties broken by index)."""
        if self.cfg.architecture == "relu":
            return F.relu(pre)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))

    def topk_sparse(self, pre: Float[torch.Tensor, "batch d_sae"]) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK activations as ``(indices, values)`` ``[batch, k]`` (values after ReLU)."""
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return idx, F.relu(vals)

    def decode_sparse(
        self, idx: Int[torch.Tensor, "batch k"], vals: Float[torch.Tensor, "batch k"]
    ) -> Float[torch.Tensor, "batch d_in"]:
        """``sum_j vals_j W_dec[idx_j] + b_dec`` in *scaled* units (no ``/ s``): the TopK
        training path, ``k / d_sae`` of a dense decode's work (forward and backward)."""
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations ``f`` (through ``hook_sae_acts_pre`` and ``hook_sae_acts``)."""
        return self.hook_sae_acts(self.activation(self.hook_sae_acts_pre(self.encode_pre(x))))

    def decode(self, f: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_in"]:
        """``x_hat = (f W_dec + b_dec) / s`` (no hook: ``forward`` hooks it)."""
        return (f @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_in"]:
        """The reconstruction, or with ``use_error_term`` the input plus any edit's effect."""
        x = self.hook_sae_input(x)
        pre = self.hook_sae_acts_pre(self.encode_pre(x))
        f_clean = self.activation(pre)
        f = self.hook_sae_acts(f_clean)
        x_hat = self.hook_sae_recons(self.decode(f))
        if not self.use_error_term:
            return self.hook_sae_output(x_hat)
        x_hat_clean = x_hat if f is f_clean and not self.hook_sae_recons.is_live() else self.decode(f_clean)
        self.hook_sae_error(x - x_hat_clean)
        # x + (x_hat - x_hat_clean) rather than x_hat + e: equal in exact arithmetic, and
        # bit-for-bit x when nothing was edited, so a zero edit is an exact identity.
        out = x if x_hat is x_hat_clean else x + (x_hat - x_hat_clean)
        return self.hook_sae_output(out)

    # ---- training helpers ------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the radial part of ``dL/dW_dec`` so a step moves rows along the sphere
        (the renormalisation after the step then only corrects second-order drift)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec.data
        parallel = (self.W_dec.grad * w).sum(-1, keepdim=True)
        self.W_dec.grad -= parallel * w

    @torch.no_grad()
    def set_input_scale_from(self, x: Float[torch.Tensor, "batch d_in"]) -> float:
        """``s = sqrt(d_in) / mean ||x||`` so scaled inputs have mean squared norm ~ d_in."""
        mean_norm = x.float().norm(dim=-1).mean().item()
        if not math.isfinite(mean_norm) or mean_norm <= 0:
            raise ValueError(f"cannot set the input scale from activations with mean norm {mean_norm}")
        self.input_scale.fill_(math.sqrt(self.cfg.d_in) / mean_norm)
        return float(self.input_scale)

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Rewrite the weights so ``input_scale == 1`` with the same function (for tools
        that know no input scale, e.g. SAELens's ``normalize_activations="none"``):
        ``W_enc <- s W_enc``, ``W_dec <- W_dec / s``, ``b_dec <- b_dec / s``. Decoder rows
        then have norm ``1/s``."""
        s = float(self.input_scale)
        self.W_enc.data *= s
        self.W_dec.data /= s
        self.b_dec.data /= s
        self.input_scale.fill_(1.0)


def identity_sae(d_in: int, hook_name: str = "", architecture: Architecture = "relu") -> SparseAutoencoder:
    """A perfect dictionary: features ``+e_i`` and ``-e_i`` for each basis direction.

    ``f = [relu(x), relu(-x)]`` and ``x_hat = relu(x) - relu(-x) = x`` exactly (for TopK,
    ``k = d_in`` keeps every possibly non-zero feature). Splicing it must change nothing.
    """
    cfg = SAEConfig(d_in=d_in, d_sae=2 * d_in, architecture=architecture, k=d_in, hook_name=hook_name)
    sae = SparseAutoencoder(cfg)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


# ---- io --------------------------------------------------------------------------------
WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"


SAELENS_FORMAT = "6.0.0"  # the SAELens on-disk format (cfg.json layout) these files follow


def _saelens_cfg(c: SAEConfig) -> dict[str, Any]:
    """``cfg.json`` as SAELens 6's ``SAE.save_model`` writes it (``TopKSAEConfig`` /
    ``StandardSAEConfig`` fields plus ``metadata``)."""
    cfg: dict[str, Any] = {
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT,
            "model_name": c.model_name,
            "hook_name": c.hook_name,
            "hook_head_index": None,
            "prepend_bos": False,
            "context_size": None,
        },
        "architecture": "topk" if c.architecture == "topk" else "standard",
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    return cfg


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``path/sae_weights.safetensors`` and ``path/cfg.json`` in SAELens's format.

    SAELens (``sae_lens.SAE.load_from_disk(path)``) opens the folder without edits: the
    weights file holds exactly ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec
    [d_sae, d_in]``, ``b_dec [d_in]`` (its strict ``load_state_dict``), and ``cfg.json`` is
    its v6 layout with ``normalize_activations="none"`` (its config check refuses names
    it does not know). Our fixed input scale ``s`` is therefore folded into the weights
    on the way out (a copy; ``sae`` is unchanged)::

        W_enc' = s W_enc,  W_dec' = W_dec / s,  b_dec' = b_dec / s

    so ``pre = (x - b_dec') W_enc' + b_enc = (s x - b_dec) W_enc + b_enc`` (the same TopK
    choice) and ``x_hat = f W_dec' + b_dec' = (f W_dec + b_dec) / s``: SAELens computes
    our function. ``cfg.json`` also keeps ``hooked_asr`` (:class:`SAEConfig`) and
    ``hooked_asr_input_scale`` (``s``), which :func:`load_sae` uses to unfold, restoring
    unit-norm decoder rows for training and steering.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    s = float(sae.input_scale)
    folded = copy.deepcopy(sae)
    folded.fold_input_scale()
    tensors = {k: getattr(folded, k).detach().float().contiguous().cpu() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    atomic_save_safetensors(tensors, path / WEIGHTS_FILE)
    meta = _saelens_cfg(sae.cfg)
    meta["hooked_asr"] = sae.cfg.to_dict()
    meta["hooked_asr_input_scale"] = s
    atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2))
    return path


def _config_from_saelens(meta: dict[str, Any]) -> SAEConfig:
    arch = meta.get("architecture", "standard")
    if arch not in ("standard", "topk"):
        raise ValueError(f"SAELens architecture {arch!r} is not supported here; only 'standard' and 'topk'")
    md = meta.get("metadata", {}) or {}
    k = meta.get("k", (meta.get("activation_fn_kwargs") or {}).get("k", 1))
    return SAEConfig(
        d_in=meta["d_in"],
        d_sae=meta["d_sae"],
        architecture="topk" if arch == "topk" else "relu",
        k=int(k),
        hook_name=meta.get("hook_name", md.get("hook_name", "")) or "",
        model_name=meta.get("model_name", md.get("model_name", "")) or "",
    )


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Read what :func:`save_sae` wrote, an older hooked_asr folder (with an ``input_scale``
    tensor), or a SAELens folder (``W_enc/b_enc/W_dec/b_dec``, ``normalize_activations="none"``)."""
    path = Path(path)
    if not (path / WEIGHTS_FILE).exists() or not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path} is not an SAE folder: expected {WEIGHTS_FILE} and {CONFIG_FILE} in it")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / CONFIG_FILE} is not valid JSON ({e}); the SAE folder is damaged") from None
    cfg = SAEConfig.from_dict(meta["hooked_asr"]) if "hooked_asr" in meta else _config_from_saelens(meta)
    norm = meta.get("normalize_activations", "none")
    if "hooked_asr" not in meta and norm not in ("none", None, False):
        raise ValueError(
            f"SAELens normalize_activations={norm!r} is not supported; fold it first "
            "(sae.fold_activation_norm_scaling_factor in SAELens) and save with 'none'"
        )
    d_in, d_sae = cfg.d_in, cfg.d_sae
    # Shapes from the config are checked against the file's header before anything is allocated.
    tensors = read_checked_safetensors(
        path / WEIGHTS_FILE,
        {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)},
        "SAE",
        optional=("input_scale",),
    )
    if "input_scale" in tensors and tuple(tensors["input_scale"].shape) != ():
        raise FileCheckError(
            f"{path / WEIGHTS_FILE}: input_scale has shape {list(tensors['input_scale'].shape)}, expected a scalar"
        )
    if "input_scale" not in tensors:  # SAELens layout: unfold the scale save_sae folded in
        s = float(meta.get("hooked_asr_input_scale", 1.0))
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"hooked_asr_input_scale must be a positive number, got {s!r} in {path / CONFIG_FILE}")
        tensors["W_enc"] = tensors["W_enc"] / s
        tensors["W_dec"] = tensors["W_dec"] * s
        tensors["b_dec"] = tensors["b_dec"] * s
        tensors["input_scale"] = torch.tensor(s)
    with torch.device("meta"):  # no random initialisation of a size the file then replaces
        sae = SparseAutoencoder(cfg, seed=None)
    sae.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True, assign=True)
    return sae.to(device)


__all__ = ["SAELENS_FORMAT", "SAEConfig", "SparseAutoencoder", "identity_sae", "save_sae", "load_sae"]
