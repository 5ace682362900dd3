"""Streaming SAE training with a shuffle buffer, dead-feature handling, checkpoints and resume.

Per step, on a batch ``x`` (scaled: ``x' = s x``), with ``x_hat' = f W_dec + b_dec``::

    L = ||x' - x_hat'||^2                                   (summed over d_in, mean over batch)
      + l1 * sum_i f_i                                      ReLU SAE (||W_dec,i|| = 1)
      + aux * ||e - f_dead W_dec||^2,  e = x' - x_hat'      TopK SAE: f_dead = top-aux_k of the
                                                            dead features' pre-activations

then the radial part of ``dL/dW_dec`` is projected out, Adam steps, and every decoder row is
renormalised to unit length. A feature is dead once it has not fired for
``cfg.dead_after_frames`` frames; a ReLU SAE resamples its dead features every
``resample_every`` steps towards inputs it reconstructs badly (Bricken et al., 2023).

Frames flow source -> buffer (``buffer_frames``, shuffled, refilled when half spent, so
frames of one clip spread over many batches) -> batches. A checkpoint holds the SAE,
the optimiser, the buffer, the generator, the source position and the dead counters, so a
resumed run continues bit-for-bit as if never stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hooked_asr.fingerprint import describe_differences, differences, jsonable
from hooked_asr.sae.frames import FrameSource
from hooked_asr.sae.model import SparseAutoencoder, load_sae, save_sae


@dataclass
class TrainConfig:
    total_frames: int
    batch_size: int = 1024
    lr: float = 1e-3
    lr_warmup_steps: int = 20
    lr_decay_fraction: float = 0.2  # linear decay to 0 over this last fraction of steps
    l1_warmup_steps: int = 50  # ReLU: L1 coefficient ramps up linearly (avoids early deaths)
    buffer_frames: int = 16384
    resample_every: int = 200  # ReLU only; 0 disables resampling
    init_input_scale: bool = True  # s = sqrt(d_in) / E||x|| from the first buffer
    init_b_dec: bool = True  # b_dec = mean of the first buffer (scaled)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # steps; 0: only at the end (if checkpoint_dir is set)
    log_every: int = 10
    seed: int = 0
    progress: bool = True

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_frames / self.batch_size)


@dataclass
class StepStats:
    step: int
    frames: int
    loss: float
    mse: float
    fvu: float
    l0: float
    dead_fraction: float
    aux: float = 0.0
    lr: float = 0.0


@dataclass
class TrainState:
    step: int = 0
    frames_seen: int = 0
    n_resampled: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class SAETrainer:
    """``SAETrainer(sae, cfg).train(source)``; ``SAETrainer.resume(dir, source)`` continues."""

    def __init__(self, sae: SparseAutoencoder, cfg: TrainConfig):
        self.sae, self.cfg = sae, cfg
        self.opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.state = TrainState()
        self.frames_since_fired = torch.zeros(sae.d_sae, dtype=torch.long)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.buffer: torch.Tensor | None = None  # shuffled frames not yet used
        self._source_done = False

    # ---- schedule ----------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.cfg
        warm = min(1.0, (step + 1) / max(c.lr_warmup_steps, 1))
        decay_start = c.total_steps * (1 - c.lr_decay_fraction)
        decay = 1.0 if step < decay_start else max(0.0, (c.total_steps - step) / max(c.total_steps - decay_start, 1))
        return c.lr * warm * decay

    def dead_mask(self) -> torch.Tensor:
        return self.frames_since_fired >= self.sae.cfg.dead_after_frames

    # ---- data --------------------------------------------------------------------------
    def _refill(self, it: Any, source: FrameSource) -> None:
        """Top the buffer up to ``buffer_frames`` with new chunks, then shuffle old and new together."""
        parts = [self.buffer] if self.buffer is not None and len(self.buffer) else []
        have = sum(len(p) for p in parts)
        empty_passes = 0
        while have < self.cfg.buffer_frames:
            try:
                chunk = next(it[0])
            except StopIteration:
                # The source is finite: start another pass over it.
                empty_passes += 1
                if empty_passes > 1:
                    raise RuntimeError("the frame source yielded no frames; check the audio and the hook name")
                source.load_state_dict({"position": 0})
                it[0] = iter(source)
                continue
            chunk = chunk.reshape(-1, chunk.shape[-1]).float()
            if len(chunk):
                empty_passes = 0
            parts.append(chunk)
            have += len(chunk)
        buf = torch.cat(parts)
        self.buffer = buf[torch.randperm(len(buf), generator=self.gen)]

    def _next_batch(self, it: Any, source: FrameSource) -> torch.Tensor:
        if self.buffer is None or len(self.buffer) < max(self.cfg.buffer_frames // 2, self.cfg.batch_size):
            self._refill(it, source)
        batch, self.buffer = self.buffer[: self.cfg.batch_size], self.buffer[self.cfg.batch_size :]
        return batch

    # ---- one step ----------------------------------------------------------------------
    @torch.enable_grad()  # trains inside torch.no_grad() / set_grad_enabled(False) too (e.g. a notebook)
    def step(self, x: torch.Tensor) -> StepStats:
        sae, cfg, scfg = self.sae, self.cfg, self.sae.cfg
        lr = self.lr_at(self.state.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        xs = x * sae.input_scale
        pre = sae.encode_pre(x)
        aux = torch.zeros(())
        if scfg.architecture == "relu":
            f = sae.activation(pre)
            err = xs - (f @ sae.W_dec + sae.b_dec)
            mse = err.pow(2).sum(-1).mean()
            l1 = scfg.l1_coefficient * min(1.0, (self.state.step + 1) / max(cfg.l1_warmup_steps, 1))
            loss = mse + l1 * (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
            active_idx, n_active = (f > 0).nonzero()[:, 1], (f > 0).float().sum(-1)
        else:
            idx, vals = sae.topk_sparse(pre)
            err = xs - sae.decode_sparse(idx, vals)
            mse = err.pow(2).sum(-1).mean()
            loss = mse
            active_idx, n_active = idx[vals > 0], (vals > 0).float().sum(-1)
            dead = self.dead_mask()
            n_dead = int(dead.sum())
            if n_dead:
                k_aux = min(scfg.aux_k or scfg.d_in // 2, n_dead)
                a_vals, a_idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
                e_hat = F.embedding_bag(a_idx, sae.W_dec, per_sample_weights=F.relu(a_vals), mode="sum")
                # The dead features learn to explain what the live ones miss (Gao et al., 2024).
                aux = (err.detach() - e_hat).pow(2).sum(-1).mean()
                if torch.isfinite(aux):
                    loss = loss + scfg.aux_coefficient * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        sae.set_decoder_norm_to_unit_norm()

        with torch.no_grad():
            self.frames_since_fired += len(x)
            self.frames_since_fired[active_idx] = 0
            total_var = (xs - xs.mean(0)).pow(2).sum()
            fvu = float(err.pow(2).sum() / total_var.clamp_min(1e-12))
        self.state.step += 1
        self.state.frames_seen += len(x)
        if (
            scfg.architecture == "relu"
            and cfg.resample_every
            and self.state.step % cfg.resample_every == 0
            and self.state.step < cfg.total_steps * (1 - cfg.lr_decay_fraction)
        ):
            self.resample_dead(xs.detach(), err.detach())
        return StepStats(
            step=self.state.step,
            frames=self.state.frames_seen,
            loss=float(loss.detach()),
            mse=float(mse.detach()),
            fvu=fvu,
            l0=float(n_active.mean()),
            dead_fraction=float(self.dead_mask().float().mean()),
            aux=float(aux.detach()),
            lr=lr,
        )

    @torch.no_grad()
    def resample_dead(self, xs: torch.Tensor, err: torch.Tensor) -> int:
        """Point each dead feature at an input drawn with probability ``~ ||e||^2``: decoder
        row ``e/||e||``, encoder column ``0.2 * mean live encoder norm * e/||e||``, bias 0,
        Adam moments reset for the touched entries."""
        sae = self.sae
        dead = self.dead_mask().nonzero().flatten()
        if len(dead) == 0:
            return 0
        weights = err.pow(2).sum(-1)
        if float(weights.sum()) <= 0:
            return 0
        pick = torch.multinomial(weights, len(dead), replacement=True, generator=self.gen)
        dirs = err[pick] / err[pick].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive = ~self.dead_mask()
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        sae.W_dec.data[dead] = dirs
        sae.W_enc.data[:, dead] = (dirs * 0.2 * enc_norm).T
        sae.b_enc.data[dead] = 0.0
        for p, index in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][index] = 0.0
        self.frames_since_fired[dead] = 0
        self.state.n_resampled += len(dead)
        return len(dead)

    # ---- loop --------------------------------------------------------------------------
    def train(self, source: FrameSource) -> TrainState:
        """Train until ``cfg.total_frames`` frames have been seen (several passes over a
        finite source if needed). Checkpoints go to ``cfg.checkpoint_dir``."""
        cfg, sae = self.cfg, self.sae
        if source.d_in != sae.cfg.d_in:
            raise ValueError(f"the source gives frames of width {source.d_in}, the SAE reads d_in={sae.cfg.d_in}")
        hook = getattr(source, "hook_name", "") or ""
        if sae.cfg.hook_name and hook and hook != sae.cfg.hook_name:
            raise ValueError(
                f"this SAE is for {sae.cfg.hook_name!r} but the source gives frames of {hook!r}; "
                f"read the SAE's hook (e.g. ModelFrameSource(model, clips, {sae.cfg.hook_name!r}))"
            )
        it = [iter(source)]
        if self.state.step == 0 and self.buffer is None:
            self._refill(it, source)
            with torch.no_grad():
                if cfg.init_input_scale:
                    sae.set_input_scale_from(self.buffer)
                if cfg.init_b_dec:
                    sae.b_dec.data.copy_((self.buffer * sae.input_scale).mean(0))
        bar = tqdm(total=cfg.total_steps, initial=self.state.step, desc="SAE", disable=not cfg.progress)
        while self.state.step < cfg.total_steps:
            stats = self.step(self._next_batch(it, source))
            bar.update(1)
            if stats.step % cfg.log_every == 0 or stats.step == cfg.total_steps:
                self.state.history.append(asdict(stats))
                bar.set_postfix(fvu=f"{stats.fvu:.3f}", l0=f"{stats.l0:.1f}", dead=f"{stats.dead_fraction:.2f}")
            if cfg.checkpoint_dir and cfg.checkpoint_every and stats.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(cfg.checkpoint_dir, source)
        bar.close()
        if cfg.checkpoint_dir:
            self.save_checkpoint(cfg.checkpoint_dir, source)
        return self.state

    # ---- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, source: FrameSource) -> Path:
        """Write a checkpoint into ``path/step_<N>/`` and switch ``path/latest.json`` to it.

        The folder holds ``sae/`` (safetensors + cfg.json, loadable alone with ``load_sae``),
        ``trainer_state.safetensors`` (optimiser moments, dead counters, buffer, generator)
        and ``trainer_state.json`` (everything else), all fsync-ed before the pointer is
        replaced atomically; the previous checkpoint is deleted only after that, so a kill at
        any moment leaves one complete checkpoint. Nothing is pickled. Returns the new folder.
        """
        from hooked_asr.files import atomic_write_bytes

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        name = f"step_{self.state.step:08d}"
        final = path / name
        tmp = path / f".{name}.{os.getpid()}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            save_sae(self.sae, tmp / "sae")
            tensors, meta = _trainer_state_to_flat(self)
            # checkpoint_dir is stored as ".", the run's own folder: a copied or moved run resumes where it is.
            meta.update(
                source=source.state_dict(),
                source_fingerprint=self._source_fingerprint(source),
                state=asdict(self.state),
                train_config={**asdict(self.cfg), "checkpoint_dir": "."},
                format=CHECKPOINT_FORMAT,
            )
            from safetensors.torch import save_file

            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(meta))
            (tmp / "history.json").write_text(json.dumps(self.state.history))
            for f in [*tmp.rglob("*")]:
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            if final.exists():  # a checkpoint of the same step: only when it is not the live one
                if _latest_name(path) == name:
                    shutil.rmtree(tmp)
                    return final
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_bytes(path / LATEST, json.dumps({"checkpoint": name, "step": self.state.step}).encode())
        atomic_write_bytes(path / "history.json", json.dumps(self.state.history).encode())
        for old in path.iterdir():  # superseded checkpoints and temp folders of dead writers
            if old.is_dir() and old.name != name and (old.name.startswith("step_") or old.name.endswith(".tmp")):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _source_fingerprint(self, source: FrameSource) -> dict[str, Any]:
        """``source.fingerprint()``, computed once per source (it may hash the model and all the audio)."""
        cached = getattr(self, "_fingerprint_of", None)
        if cached is None or cached[0] is not source:
            self._fingerprint_of = (source, jsonable(source.fingerprint()))
        return self._fingerprint_of[1]

    @classmethod
    def resume(cls, path: str | Path, source: FrameSource, **overrides: Any) -> "SAETrainer":
        """Rebuild a trainer from ``save_checkpoint``'s folder; ``source`` is moved to where
        the checkpoint left it. ``overrides`` change TrainConfig fields (e.g. ``progress``).

        Checkpoints go on into ``path`` itself (unless ``checkpoint_dir`` is overridden), wherever
        the run was first started. ``source`` must give the frames the run was trained on: its
        fingerprint (hook, model name and weights hash, the data's content hash) is compared with
        the checkpoint's and a difference raises ``ValueError`` naming it."""
        path = Path(path)
        name = _latest_name(path)
        if name is None:
            hint = (
                " It holds trainer_state.pt, a pickle written by an older version: pickles can run code when "
                "loaded, so it is not read; start the run again."
                if (path / "trainer_state.pt").exists()
                else ""
            )
            raise FileNotFoundError(f"no {LATEST} in {path}: not a checkpoint folder written by SAETrainer.{hint}")
        ck = path / name
        if not _is_inside(ck, path) or not (ck / STATE_JSON).exists() or not (ck / STATE_TENSORS).exists():
            raise FileNotFoundError(f"{path / LATEST} points at {name!r}, which is not a complete checkpoint in {path}")
        try:
            meta = json.loads((ck / STATE_JSON).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{ck / STATE_JSON} is not valid JSON ({e}); the checkpoint is damaged") from None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(ck / STATE_TENSORS))
        except SafetensorError as e:
            raise ValueError(f"{ck / STATE_TENSORS} is not a readable safetensors file ({e})") from None
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ck / STATE_JSON} has format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        stored = meta.get("source_fingerprint")
        if stored is None:
            warnings.warn(
                f"{ck / STATE_JSON} was written before checkpoints recorded their frame source; "
                "resuming without checking that the frames are the same",
                UserWarning,
                stacklevel=2,
            )
        else:
            diff = differences(stored, jsonable(source.fingerprint()))
            if diff:
                raise ValueError(
                    f"{path} was trained on other frames than this source gives "
                    f"({describe_differences(diff)}). Resume with "
                    "the same hook, model and data, or start a new run in another folder"
                )
        cfg = TrainConfig(**{**meta["train_config"], "checkpoint_dir": str(path), **overrides})
        sae = load_sae(ck / "sae")
        exact = {k.removeprefix("sae/"): v for k, v in tensors.items() if k.startswith("sae/")}
        if exact:
            sae.load_state_dict(exact, strict=True)
        trainer = cls(sae, cfg)
        _trainer_state_from_flat(trainer, tensors, meta)
        trainer.state = TrainState(**meta["state"])
        source.load_state_dict(meta["source"])
        return trainer


CHECKPOINT_FORMAT = "hooked_asr.sae_trainer/2"
LATEST = "latest.json"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def _latest_name(path: Path) -> str | None:
    try:
        name = json.loads((path / LATEST).read_text())["checkpoint"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _is_inside(p: Path, root: Path) -> bool:
    return p.resolve().parent == root.resolve()


def _trainer_state_to_flat(trainer: SAETrainer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors for safetensors and a JSON-able rest: the optimiser's per-parameter state is split
    into tensor entries ``opt/<param>/<key>`` and plain values kept in the JSON."""
    opt = trainer.opt.state_dict()
    tensors: dict[str, torch.Tensor] = {
        "frames_since_fired": trainer.frames_since_fired.contiguous(),
        "generator": trainer.gen.get_state(),
        # The exact parameters: sae/ holds them with the input scale folded in (SAELens's
        # layout), and unfolding is not bit-exact, so a resumed run would drift from the original.
        **{f"sae/{k}": v.detach().cpu().contiguous() for k, v in trainer.sae.state_dict().items()},
    }
    if trainer.buffer is not None:
        tensors["buffer"] = trainer.buffer.contiguous()
    plain: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt/{pid}/{key}"] = val.detach().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    return tensors, {
        "optimizer": {
            "param_groups": groups,
            "plain_state": plain,
            "tuple_keys": sorted({k for g in opt["param_groups"] for k, v in g.items() if isinstance(v, tuple)}),
        },
        "has_buffer": trainer.buffer is not None,
    }


def _trainer_state_from_flat(trainer: SAETrainer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    o = meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("opt/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = val
    for pid, st in o["plain_state"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = [{k: (tuple(v) if k in o["tuple_keys"] else v) for k, v in g.items()} for g in o["param_groups"]]
    trainer.opt.load_state_dict({"state": state, "param_groups": groups})
    trainer.frames_since_fired = tensors["frames_since_fired"]
    trainer.gen.set_state(tensors["generator"])
    trainer.buffer = tensors["buffer"] if meta.get("has_buffer") else None


def train_sae(sae: SparseAutoencoder, source: FrameSource, **train_kwargs: Any) -> TrainState:
    """Shorthand: ``SAETrainer(sae, TrainConfig(**train_kwargs)).train(source)``."""
    return SAETrainer(sae, TrainConfig(**train_kwargs)).train(source)


__all__ = ["SAETrainer", "StepStats", "TrainConfig", "TrainState", "train_sae"]
