"""Direct logit attribution of every decoder component, summing exactly to the logit.

With ``x`` the decoder's final residual (``decoder.blocks.{n-1}.hook_resid_post``), ``s`` the
final norm's scale, ``w, b`` its weight and bias, and ``d_t = W_U[:, t]`` (minus
``W_U[:, t']`` for a logit difference)::

    logit_t = ((x - mean(x)) / s * w + b) . d_t          (RMSNorm: no mean, no b)
            = sum_c ((c - mean(c)) / s) . (w * d_t)  +  b . d_t

over the components ``c`` of ``x``: the token and position embeddings, every self-attention
head and every cross-attention head (``z_h W_O[h]``), every attention's ``b_O``, every MLP
(``hook_mlp_out``, its bias included). ``s`` is the scale of the whole residual (the cached
``hook_scale``), so the attribution is linear and the rows plus ``decoder.ln_final.b``
sum to the model's logit (to float rounding). A decoder position ``p`` predicts token
``p + 1``; :func:`dla_transcript` lines positions up with the generation steps of a transcript.

    >>> res = dla_transcript(model, "speech.wav")          # every step of the greedy transcript
    >>> res.heatmap("cross_attn", step=3)                  # [layer, head] for the 4th token
    >>> res.save("out/dla")                                 # JSON, CSV, one PNG per attention kind
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

LN_BIAS = "decoder.ln_final.b"


@dataclass
class DLAResult:
    """Attributions ``[component, batch, step]`` with component labels (sweep components, embeddings,
    biases, ``decoder.ln_final.b``); ``logits [batch, step]`` is the model's own logit (difference) at
    each step, which the attributions sum to. ``positions[i]`` is the decoder position of step ``i``."""

    attributions: Float[torch.Tensor, "component batch step"]
    labels: list[str]
    logits: Float[torch.Tensor, "batch step"]
    positions: list[int]
    tokens: Any  # target ids [batch, step]
    incorrect_tokens: Any = None
    token_strings: list[str] = field(default_factory=list)
    n_heads: int = 0
    n_layers: int = 0

    @property
    def total(self) -> Float[torch.Tensor, "batch step"]:
        return self.attributions.sum(0)

    @property
    def max_abs_error(self) -> float:
        """``max |sum of attributions - logit|``: the identity the decomposition promises."""
        return float((self.total - self.logits).abs().max())

    def kinds(self) -> list[str]:
        return [k for k in ("attn", "cross_attn") if any(f".{k}.head." in lab for lab in self.labels)]

    def _values(self, step: int | None, item: int) -> torch.Tensor:
        a = self.attributions[:, item]
        return a.mean(-1) if step is None else a[:, step]

    def heatmap(
        self, kind: str = "cross_attn", step: int | None = None, item: int = 0
    ) -> Float[torch.Tensor, "layer head"]:
        """Per-head attribution of one attention kind at one step (``None``: the mean over steps)."""
        if kind not in self.kinds():
            raise ValueError(f"no {kind!r} heads here; kinds: {self.kinds()}")
        v = self._values(step, item)
        grid = torch.full((self.n_layers, self.n_heads), float("nan"))
        for i, lab in enumerate(self.labels):
            parts = lab.split(".")
            if len(parts) == 6 and parts[3] == kind and parts[4] == "head":
                grid[int(parts[2]), int(parts[5])] = v[i]
        return grid

    def top(self, k: int = 10, step: int | None = None, item: int = 0) -> list[tuple[str, float]]:
        v = self._values(step, item)
        order = v.abs().argsort(descending=True)[:k]
        return [(self.labels[i], float(v[i])) for i in order]

    def summary(self, k: int = 8, step: int | None = None) -> str:
        what = (
            "mean over steps"
            if step is None
            else f"step {step} ({self.token_strings[step]!r})"
            if self.token_strings
            else f"step {step}"
        )
        lines = [f"direct logit attribution, {what}: components sum to the logit within {self.max_abs_error:.2e}"]
        lines += [f"  {lab:45s} {val:+.3f}" for lab, val in self.top(k, step)]
        return "\n".join(lines)

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows: component, item, step, position, token, attribution."""
        out = []
        for c, lab in enumerate(self.labels):
            for b in range(self.attributions.shape[1]):
                for s in range(self.attributions.shape[2]):
                    out.append(
                        {
                            "component": lab,
                            "item": b,
                            "step": s,
                            "position": self.positions[s],
                            "token": self.token_strings[s] if self.token_strings else None,
                            "attribution": float(self.attributions[c, b, s]),
                        }
                    )
        return out

    def plot(
        self, kind: str = "cross_attn", step: int | None = None, path: str | Path | None = None, item: int = 0
    ) -> Any:
        """A layer x head heatmap of one attention kind (diverging scale centred on 0)."""
        from hooked_asr.plotting import plot_heatmap

        grid = self.heatmap(kind, step, item).numpy()
        vmax = float(np.nanmax(np.abs(grid))) or 1.0
        what = (
            "mean over steps"
            if step is None
            else (repr(self.token_strings[step]) if self.token_strings else f"step {step}")
        )
        return plot_heatmap(
            grid,
            [str(l) for l in range(self.n_layers)],
            [str(h) for h in range(self.n_heads)],
            cell_text=[[f"{x:+.2f}" for x in row] for row in grid],
            title=f"DLA, decoder {kind} heads: {what}",
            cbar_label="logit attribution",
            vmin=-vmax,
            vmax=vmax,
            cmap="RdBu_r",
            path=path,
        )

    def save(self, out: str | Path, step: int | None = None) -> dict[str, Path]:
        """``{out}.json`` (labels, attributions, logits, tokens), ``{out}.csv`` (tidy rows), ``{out}_{kind}.png``."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = {"json": out.with_suffix(".json"), "csv": out.with_suffix(".csv")}
        paths["json"].write_text(
            json.dumps(
                {
                    "labels": self.labels,
                    "positions": self.positions,
                    "token_strings": self.token_strings,
                    "tokens": torch.as_tensor(self.tokens).tolist(),
                    "incorrect_tokens": None
                    if self.incorrect_tokens is None
                    else torch.as_tensor(self.incorrect_tokens).tolist(),
                    "attributions": self.attributions.tolist(),
                    "logits": self.logits.tolist(),
                    "max_abs_error": self.max_abs_error,
                },
                indent=1,
            )
        )
        rows = self.rows()
        with paths["csv"].open("w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
        for kind in self.kinds():
            paths[kind] = out.parent / f"{out.name}_{kind}.png"
            self.plot(kind, step, paths[kind])
        return paths


def _targets(model: Any, t: Any, batch: int, n_pos: int, device: Any) -> torch.Tensor:
    if isinstance(t, str):
        t = model.to_single_token(t)
    t = torch.as_tensor(t, device=device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(batch, n_pos)
    elif t.ndim == 1:
        t = t.expand(batch, -1) if t.shape[0] == n_pos else t[:, None].expand(-1, n_pos)
    if tuple(t.shape) != (batch, n_pos):
        raise ValueError(
            f"targets must be an id, a string, [{n_pos}] (one per step) or [{batch}, {n_pos}]; got {tuple(t.shape)}"
        )
    return t


DLA_HOOKS = ("hook_z", "hook_mlp_out", "hook_embed", "hook_pos_embed", "ln_final.hook_scale", "hook_logits")


@torch.no_grad()
def direct_logit_attribution(
    model: Any,
    inputs: Mapping[str, Any],
    tokens: Any = None,
    incorrect_tokens: Any = None,
    positions: int | Sequence[int] | None = None,
) -> DLAResult:
    """Attribute the logit of ``tokens`` (or ``logit(tokens) - logit(incorrect_tokens)``) at decoder
    ``positions`` of one teacher-forced forward ``model(**inputs)`` to every decoder component.

    ``tokens=None``: the next input token at each position (what teacher forcing scores);
    otherwise an id / string (every position), one id per position, or ``[batch, step]``.
    ``positions``: an int, a list, or ``None`` (every position that has a next token when
    ``tokens`` is None, else every position). Only decoder hooks are cached.
    """
    _, cache = model.run_with_cache(
        **inputs, return_cache_object=True, names_filter=lambda n: n.startswith("decoder.") and n.endswith(DLA_HOOKS)
    )
    dec_tokens = inputs.get("decoder_input_ids", inputs.get("input_ids"))
    n_total = cache["decoder.hook_logits"].shape[1]
    if positions is None:
        positions = list(range(n_total - 1)) if tokens is None else list(range(n_total))
    elif isinstance(positions, int):
        positions = [positions % n_total]
    positions = [int(p) for p in positions]
    if any(not 0 <= p < n_total for p in positions):
        raise ValueError(f"positions must lie in [0, {n_total - 1}], got {positions}")
    logits_all = cache["decoder.hook_logits"]
    batch, device = logits_all.shape[0], logits_all.device
    if tokens is None:
        if any(p + 1 >= n_total for p in positions):
            raise ValueError("tokens=None scores the next input token; the last position has none: pass tokens")
        tokens = torch.as_tensor(dec_tokens, device=device)[:, [p + 1 for p in positions]]
    t = _targets(model, tokens, batch, len(positions), device)
    it = None if incorrect_tokens is None else _targets(model, incorrect_tokens, batch, len(positions), device)

    full, labels = cache.get_full_resid_decomposition(
        expand_neurons=False, split_biases=True, pos_slice=positions, return_labels=True
    )
    attrs = cache.logit_attrs(full, t, incorrect_tokens=it, pos_slice=positions)
    ln = model.decoder.ln_final
    if getattr(ln, "b", None) is not None:
        d = model.W_U[:, t].movedim(0, -1) - (0 if it is None else model.W_U[:, it].movedim(0, -1))
        attrs = torch.cat([attrs, (d * ln.b).sum(-1)[None]])
        labels = labels + [LN_BIAS]
    idx = torch.as_tensor(positions, device=device)
    sel = logits_all[:, idx]
    logit = sel.gather(-1, t[..., None])[..., 0]
    if it is not None:
        logit = logit - sel.gather(-1, it[..., None])[..., 0]
    strs = []
    if getattr(model, "tokenizer", None) is not None:
        strs = model.to_str_tokens(t[0])
    return DLAResult(
        attrs.float().cpu(),
        labels,
        logit.float().cpu(),
        positions,
        t.cpu(),
        None if it is None else it.cpu(),
        strs,
        model.cfg.decoder.n_heads,
        model.cfg.decoder.n_layers,
    )


def dla_transcript(
    model: Any,
    audio: Any,
    step: int | None = None,
    incorrect_tokens: Any = None,
    tokens: Sequence[int] | None = None,
    **transcribe_kwargs: Any,
) -> DLAResult:
    """DLA of a transcript's tokens: at every generation step (``step=None``) or one.

    ``tokens`` (the transcript's ids) default to ``model.transcribe(audio, **transcribe_kwargs).tokens``
    (the model's own greedy decoding). Step ``i`` is decoder position ``prompt_len - 1 + i``
    of the teacher-forced pass over prompt + tokens, which predicts ``tokens[i]``.
    """
    if tokens is None:
        tokens = model.transcribe(audio, **transcribe_kwargs).tokens
    tokens = list(tokens)
    if not tokens:
        raise ValueError("the transcript is empty: nothing to attribute (pass tokens=...)")
    tf = model.teacher_forced_inputs(audio, tokens)
    steps = list(range(len(tokens))) if step is None else [step % len(tokens)]
    positions = [tf.prompt_len - 1 + s for s in steps]
    targets = torch.tensor([tokens[s] for s in steps])
    return direct_logit_attribution(model, tf.kwargs, targets, incorrect_tokens, positions)


__all__ = ["DLAResult", "LN_BIAS", "direct_logit_attribution", "dla_transcript"]
