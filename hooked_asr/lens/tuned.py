"""Tuned lens for the decoder: one learned affine translator per layer (Belrose et al., 2023).

    tuned_l(h) = unembed(ln_final(A_l h + b_l)),     A_l = I, b_l = 0 at initialisation

so at initialisation the tuned lens *is* the logit lens. Training minimises, over decoder
positions of a dataset, ``sum_l KL(p_final || softmax(tuned_l(h_l)))`` where ``p_final`` is the
model's own output distribution (the last layer through the same head). The last layer's
translator is kept at the identity (its logit lens is already exact). The model's weights are
frozen; only ``A`` and ``b`` learn.

Saved as ``<path>.safetensors`` (the translators) + ``<path>.json`` (shapes, the model it was
trained on, training history).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float
from tqdm.auto import tqdm

from hooked_asr.files import FileCheckError, atomic_save_safetensors, atomic_write_text, read_checked_safetensors
from hooked_asr.lens.logit import apply_logit_lens, decoder_lens_names, one_result


class TunedLens(nn.Module):
    """Per-layer affine translators ``A_l h + b_l`` (``weight[l] = A_l``, stored ``[d_out, d_in]``)."""

    def __init__(self, n_layers: int, d_model: int, model_name: str = ""):
        super().__init__()
        self.n_layers, self.d_model, self.model_name = n_layers, d_model, model_name
        self.weight = nn.Parameter(torch.eye(d_model).repeat(n_layers, 1, 1))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))

    @classmethod
    def for_model(cls, model: Any) -> "TunedLens":
        """An identity lens shaped for ``model`` (on its device)."""
        d_model = model.decoder.W_E.shape[1]
        name = getattr(model.cfg, "name", "") or ""
        return cls(model.n_layers["decoder"], d_model, model_name=name).to(model.decoder.W_E.device)

    def translate(
        self, resid: Float[torch.Tensor, "layer ... d_model"], layers: Sequence[int] | None = None
    ) -> Float[torch.Tensor, "layer ... d_model"]:
        """``A_l h_l + b_l`` for each stacked layer (``layers`` names them; default all, in order)."""
        idx = list(range(self.n_layers)) if layers is None else list(layers)
        if resid.shape[0] != len(idx) or resid.shape[-1] != self.d_model:
            raise ValueError(f"resid must be [{len(idx)} layers, ..., {self.d_model}], got {tuple(resid.shape)}")
        W, b = self.weight[idx], self.bias[idx]
        flat = resid.reshape(len(idx), -1, self.d_model)
        out = torch.baddbmm(b[:, None, :], flat, W.transpose(1, 2))
        return out.reshape(resid.shape)

    def logits(
        self, model: Any, resid: Float[torch.Tensor, "layer ... d_model"], layers: Sequence[int] | None = None
    ) -> Float[torch.Tensor, "layer ... d_vocab"]:
        """Tuned-lens logits: ``unembed(ln_final(A_l h_l + b_l))``."""
        return apply_logit_lens(model, self.translate(resid, layers))

    # ---- save / load ---------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``path.safetensors`` and ``path.json`` (each atomically); returns both paths."""
        base = Path(path).with_suffix("")
        atomic_save_safetensors({"weight": self.weight, "bias": self.bias}, base.with_suffix(".safetensors"))
        meta = {
            "format": "hooked_asr.tuned_lens/1",
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "model_name": self.model_name,
            **(extra or {}),
        }
        atomic_write_text(base.with_suffix(".json"), json.dumps(meta, indent=2))
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TunedLens":
        """Read what :meth:`save` wrote (``path`` with or without a suffix). The json's sizes are
        checked against the tensors' shapes before anything is allocated; NaN/inf weights are refused."""
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        for p in (st, js):
            if not p.exists():
                raise FileNotFoundError(
                    f"tuned lens file {p} is missing: TunedLens.save writes both {st.name} and {js.name}"
                )
        try:
            meta = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileCheckError(f"{js} is not valid JSON ({e}); the tuned lens is damaged") from None
        n, d = (meta.get("n_layers"), meta.get("d_model")) if isinstance(meta, dict) else (None, None)
        if any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in (n, d)):
            raise FileCheckError(f"{js}: n_layers={n!r}, d_model={d!r}; expected positive integers")
        tensors = read_checked_safetensors(st, {"weight": (n, d, d), "bias": (n, d)}, "tuned lens")
        with torch.device("meta"):  # no identity initialisation of a size the file then replaces
            lens = cls(n, d, model_name=meta.get("model_name", ""))
        lens.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
        lens.meta = meta
        return lens.to(device)

    def check_model(self, model: Any) -> None:
        """Raise when ``model`` is not shaped like the one this lens was trained on."""
        d_model, n = model.decoder.W_E.shape[1], model.n_layers["decoder"]
        if (n, d_model) != (self.n_layers, self.d_model):
            raise ValueError(
                f"this tuned lens is for {self.n_layers} decoder layers of width {self.d_model} "
                f"({self.model_name or 'unnamed model'}); the model has {n} layers of width {d_model}"
            )


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_decoder_residuals(
    model: Any,
    audios: Sequence[Any],
    transcripts: Sequence[Sequence[int]] | None = None,
    append_eos: bool = True,
    progress: bool = True,
    **transcribe_kwargs: Any,
) -> Float[torch.Tensor, "layer n_positions d_model"]:
    """Every decoder layer's ``hook_resid_post`` at every position that predicts a transcript
    token (the model's own greedy transcript when ``transcripts`` is None), concatenated over
    the dataset. Kept on the CPU."""
    names = decoder_lens_names(model)
    eos = int(model.cfg.eos_token_id)
    chunks = []
    for i, audio in enumerate(tqdm(audios, desc="decoder residuals", disable=not progress)):
        if transcripts is None:
            out = one_result(model.transcribe(audio, **transcribe_kwargs))
            toks, lang = list(out.tokens), out.language
        else:
            toks, lang = [int(t) for t in transcripts[i]], transcribe_kwargs.get("language")
        if append_eos:
            toks = toks + [eos]
        if not toks:
            continue
        inputs = model.teacher_forced_inputs(audio, toks, **({"language": lang} if lang else {}))
        _, cache = model.run_with_cache(**inputs.kwargs, names_filter=names)
        p = inputs.prompt_len
        chunks.append(torch.stack([cache[n][0, p - 1 : p - 1 + len(toks)] for n in names]).cpu())
    if not chunks:
        raise ValueError("no decoder positions collected: every transcript was empty")
    return torch.cat(chunks, dim=1)


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """Stop gradients into the model's weights (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _kl_per_layer(model: Any, lens: TunedLens | None, resid: torch.Tensor) -> Float[torch.Tensor, "layer batch"]:
    """``KL(p_final || p_l)`` for each layer; ``lens=None`` is the logit lens."""
    with torch.no_grad():
        target = F.log_softmax(apply_logit_lens(model, resid[-1]).float(), dim=-1)
    logits = apply_logit_lens(model, resid) if lens is None else lens.logits(model, resid)
    logq = F.log_softmax(logits.float(), dim=-1)
    return (target.exp() * (target - logq)).sum(-1)


@dataclass
class TuneHistory:
    train_kl: list[float]  # mean over trained layers, per logged step
    val_kl_before: list[float]  # per layer, logit lens
    val_kl_after: list[float]  # per layer, tuned lens


def train_tuned_lens(
    model: Any,
    residuals: Float[torch.Tensor, "layer n d_model"],
    lens: TunedLens | None = None,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[TunedLens, TuneHistory]:
    """Fit the translators of layers ``0 .. L-2`` by Adam on ``sum_l KL(p_final || p_l)``.

    ``residuals`` come from :func:`collect_decoder_residuals`. A held-out ``val_fraction`` of
    positions measures per-layer KL before and after.
    """
    lens = TunedLens.for_model(model) if lens is None else lens
    lens.check_model(model)
    device = model.decoder.W_E.device
    n = residuals.shape[1]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    val, train = residuals[:, perm[:n_val]], residuals[:, perm[n_val:]]
    if train.shape[1] == 0:
        raise ValueError(f"no training positions: {n} positions with val_fraction={val_fraction}")
    last = lens.n_layers - 1
    trained = list(range(last))
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    history = TuneHistory(train_kl=[], val_kl_before=[], val_kl_after=[])
    history.val_kl_before = evaluate_kl(model, None, val).tolist() if n_val else []
    with _frozen(model):
        for step in tqdm(range(steps), desc="tuned lens", disable=not progress):
            idx = torch.randint(0, train.shape[1], (min(batch_size, train.shape[1]),), generator=g)
            batch = train[:, idx].to(device)
            kl = _kl_per_layer(model, lens, batch)[trained].mean(-1)
            loss = kl.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # the last translator stays the identity
                lens.weight[last] = torch.eye(lens.d_model, device=lens.weight.device)
                lens.bias[last] = 0
            history.train_kl.append(float(kl.detach().mean()))
    history.val_kl_after = evaluate_kl(model, lens, val).tolist() if n_val else []
    return lens, history


@torch.no_grad()
def evaluate_kl(
    model: Any, lens: TunedLens | None, residuals: Float[torch.Tensor, "layer n d_model"], batch_size: int = 256
) -> Float[torch.Tensor, "layer"]:
    """Mean ``KL(p_final || p_l)`` per layer over ``residuals`` (``lens=None``: logit lens)."""
    device = model.decoder.W_E.device
    total = torch.zeros(residuals.shape[0], dtype=torch.float64)
    for i in range(0, residuals.shape[1], batch_size):
        total += _kl_per_layer(model, lens, residuals[:, i : i + batch_size].to(device)).double().sum(-1).cpu()
    return (total / max(residuals.shape[1], 1)).float()


@torch.no_grad()
def compare_lenses(
    model: Any, lens: TunedLens, residuals: Float[torch.Tensor, "layer n d_model"], batch_size: int = 256
) -> dict[str, list[float]]:
    """Per layer, for the logit lens and the tuned lens: top-1 agreement with the model's final
    prediction, and ``KL(p_final || p_l)``."""
    device = model.decoder.W_E.device
    agree = {"logit": torch.zeros(residuals.shape[0]), "tuned": torch.zeros(residuals.shape[0])}
    for i in range(0, residuals.shape[1], batch_size):
        r = residuals[:, i : i + batch_size].to(device)
        final = apply_logit_lens(model, r[-1]).argmax(-1)
        agree["logit"] += (apply_logit_lens(model, r).argmax(-1) == final).float().sum(-1).cpu()
        agree["tuned"] += (lens.logits(model, r).argmax(-1) == final).float().sum(-1).cpu()
    n = max(residuals.shape[1], 1)
    return {
        "layers": decoder_lens_names(model),
        "agreement_logit_lens": (agree["logit"] / n).tolist(),
        "agreement_tuned_lens": (agree["tuned"] / n).tolist(),
        "kl_logit_lens": evaluate_kl(model, None, residuals, batch_size).tolist(),
        "kl_tuned_lens": evaluate_kl(model, lens, residuals, batch_size).tolist(),
    }


__all__ = ["TunedLens", "TuneHistory", "collect_decoder_residuals", "compare_lenses", "evaluate_kl", "train_tuned_lens"]
