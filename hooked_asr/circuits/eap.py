"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024) over the encoder-decoder graph.

Patching one edge ``u -> v`` moves receiver ``v``'s input by ``Delta_u = a^ref_u - a_u``
(:mod:`hooked_asr.circuits.graph`); to first order the metric moves by::

    EAP(u -> v) = sum_{batch, pos, d_model} Delta_u * dm/dx_v        (at the clean run)

``dm/dx_v`` is the gradient with respect to ``v``'s *own* input (other receivers' inputs
held fixed). One backward gives the gradient at every receiver hook (``hook_q / k / v``
head by head, ``ln2.hook_normalized``, ``decoder.ln_final.hook_normalized``); the
vector-Jacobian product of the receiver's norm and projection at the clean residual turns
it into ``dm/dx_v`` (nothing per head is materialised in the forward). Since ``a_u`` enters
the input of every receiver downstream of it, ``dm/da_u = sum_v dm/dx_v``: the EAP scores of
a node's outgoing edges sum to its node-level attribution patching score
(:func:`hooked_asr.patching.attribution_patching`) - tested.

EAP-IG replaces the clean gradient by its average along the straight path from the clean
to the reference *inputs* of the graph (the embedding nodes, as Hanna et al. interpolate
input embeddings), at ``m`` midpoints::

    EAP-IG(u -> v) = Delta_u * (1/m) sum_{k=1..m} dm/dx_v |_{emb = emb + alpha_k (emb^ref - emb)},  alpha_k = (k - 1/2)/m

Along that path the embeddings move linearly, so for an embedding node ``u`` the sum over
its outgoing edges is the integrated gradient of ``m`` along a straight line, which tends
to the real patching effect ``m(a_u = a^ref_u) - m(clean)`` as ``m`` grows (tested);
EAP (``m = 1`` at ``alpha = 0``) is the tangent at the clean end.

Cost: one reference forward, one clean forward, and ``m`` forward + backward passes
(batched ``batch_size`` steps at a time; the backward needs no weight gradients). The
receivers' gradients are summed over the steps in head space (see :func:`_norm_grad_sum`)
and contracted with the senders' deltas once, so scoring every edge costs about one
forward whatever ``m`` (``benchmarks/bench_eap.py``).

    >>> scores = eap_ig(model, tf.kwargs, ref_tf.kwargs, metric, steps=8)
    >>> scores.ranked().head(), scores.node_scores()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float

from hooked_asr.circuits.graph import EdgeForward, Graph, _norm_fn, _projection
from hooked_asr.components.norm import LayerNorm, RMSNorm
from hooked_asr.circuits.path_patching import _check_kwargs, _reference_acts

Metric = Callable[[Float[torch.Tensor, "batch pos d_vocab"]], Float[torch.Tensor, "batch"]]


@dataclass
class EdgeScores:
    """Scores of every edge of ``graph``: ``scores[i, j]`` for ``senders[i] -> receivers[j]`` (0 off the graph)."""

    graph: Graph
    scores: Float[torch.Tensor, "sender receiver"]
    method: str
    steps: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def completeness(self) -> "Completeness | None":
        """EAP-IG's completeness check (:class:`Completeness`), None when not computed."""
        c = self.meta.get("completeness")
        if c is None:
            return None
        return Completeness(
            c["input_sum"], c["effect"], c["steps"], c["tolerance"], [tuple(h) for h in c["history"]], c["capped"]
        )

    def ranked(self, absolute: bool = True) -> Any:
        """Every edge, highest ``|score|`` first (``absolute=False``: highest score): a DataFrame
        with columns edge, sender, receiver, score."""
        import pandas as pd

        i, j = self.graph.allowed.nonzero(as_tuple=True)
        s = self.scores[i, j]
        order = torch.argsort(s.abs() if absolute else s, descending=True, stable=True)
        i, j, s = i[order].tolist(), j[order].tolist(), s[order].tolist()
        g = self.graph
        return pd.DataFrame(
            {
                "edge": [g.edge_name(a, b) for a, b in zip(i, j)],
                "sender": [g.senders[a].name for a in i],
                "receiver": [g.receivers[b].name for b in j],
                "score": s,
            }
        )

    def node_scores(self) -> Any:
        """Per sender, the sum of its outgoing edges' scores (for EAP: node attribution patching)."""
        import pandas as pd

        tot = (self.scores * self.graph.allowed).sum(1).tolist()
        return pd.DataFrame(
            [
                {"component": n.name, "score": v, "stack": n.stack, "layer": n.layer, "kind": n.kind, "head": n.head}
                for n, v in zip(self.graph.senders, tot)
            ]
        )

    def top_k_mask(self, k: int, absolute: bool = True) -> Bool[torch.Tensor, "sender receiver"]:
        """The ``k`` edges with the highest ``|score|`` (ties broken by graph order)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        s = self.scores.abs() if absolute else self.scores
        s = torch.where(self.graph.allowed, s, torch.tensor(float("-inf")))
        flat = torch.argsort(s.flatten(), descending=True, stable=True)[: min(k, self.graph.n_edges)]
        m = torch.zeros(self.scores.numel(), dtype=torch.bool)
        m[flat] = True
        return m.view_as(self.scores)

    def circuit(self, k: int, absolute: bool = True) -> Any:
        """The circuit of the top-``k`` edges (:class:`hooked_asr.circuits.circuit.Circuit`)."""
        from hooked_asr.circuits.circuit import Circuit

        return Circuit(self.graph, self.top_k_mask(k, absolute), scores=self.scores, method=self.method)

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """``{"method", "steps", "edges": [{"sender", "receiver", "score"}, ...]}`` (written to ``path`` if given)."""
        t = self.ranked()
        out = {
            "method": self.method,
            "steps": self.steps,
            "meta": self.meta,
            "edges": t[["sender", "receiver", "score"]].to_dict(orient="records"),
        }
        if path is not None:
            Path(path).write_text(json.dumps(out, indent=1))
        return out


def _tile(kwargs: Mapping[str, Any], reps: int) -> dict[str, Any]:
    return {
        k: (v.repeat(reps, *([1] * (v.ndim - 1))) if isinstance(v, torch.Tensor) and reps > 1 else v)
        for k, v in kwargs.items()
    }


def _accumulate(
    graph: Graph, ef: EdgeForward, grads: list[torch.Tensor | None], reps: int, acc: dict[int, torch.Tensor]
) -> None:
    """Add ``dm/dx_v`` of this backward (summed over its ``reps`` stacked copies) to ``acc``, per
    receiver group, flattened ``[(batch pos d_model), n]`` for the one contraction at the end."""
    for gi, rg in enumerate(graph.receiver_groups):
        gout = grads[gi]
        if gout is None:
            continue
        norm = _norm_fn(ef.model, rg)
        if not isinstance(norm, (LayerNorm, RMSNorm)):
            raise NotImplementedError(
                f"EAP reads receiver gradients through a LayerNorm or RMSNorm; {rg.hook} sits behind "
                f"{type(norm).__name__}: use path patching / circuit evaluation (no gradients) for this model"
            )
        Gt = _norm_grad_sum(ef, gi, norm, gout, reps)
        acc[gi] = Gt if gi not in acc else acc[gi] + Gt


def _contract(graph: Graph, acc: dict[int, torch.Tensor], deltas: list[torch.Tensor], scores: torch.Tensor) -> None:
    """``scores[u, v] = sum_{batch, pos, d} Delta_u * dm/dx_v``: one matmul per (sender group, receiver group)."""
    for gi, Gt in acc.items():
        rg = graph.receiver_groups[gi]
        cols = torch.tensor(rg.index)
        for si in rg.upstream:
            D = deltas[si].to(Gt.device, Gt.dtype)  # [n_u, batch, pos, d_model]
            s = D.reshape(D.shape[0], -1) @ Gt
            scores[torch.tensor(graph.sender_groups[si].index)[:, None], cols[None, :]] += s.to(scores.dtype).cpu()


def _norm_grad_sum(ef: EdgeForward, gi: int, norm: Any, gout: torch.Tensor, reps: int) -> torch.Tensor:
    """``sum_rows dm/dx_v`` ``[(batch pos d_model), n]`` for receivers behind a LayerNorm / RMSNorm,
    without forming ``dm/dx_v`` per row. With ``x^ = (x - mu)/s``, ``y = x^ w + beta`` (``mu = beta = 0`` for
    RMSNorm), ``g`` the gradient at the hook (after the head's projection ``W``, or ``y`` itself)::

        dm/dx = (1/s) (w W g - a - x^ b),   a = mean_d(w W g) = g.(W^T w)/d,   b = mean_d(w W g x^) = g.(y W)/d

    and ``y W = hook value - beta W - b_proj`` is what the hook already carried, so every per-row
    quantity lives in head space and only ``sum_rows g / s`` is projected back to ``d_model``.
    """
    rg = ef.graph.receiver_groups[gi]
    x = ef.x[rg.x_hook].detach().float()  # [rows, pos, d_model]
    rows, n_pos, d = x.shape
    B = rows // reps
    layer = isinstance(norm, LayerNorm)
    w = norm.w.detach().float()
    beta = norm.b.detach().float() if layer else None
    xc = x - x.mean(-1, keepdim=True) if layer else x
    s = (xc.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    xh = xc / s
    inv_s = (1.0 / s)[..., 0]  # [rows, pos]
    g = gout.detach().float()
    y = ef.outputs[gi].float()
    if rg.input is None:
        g, y = g[:, :, None], y[:, :, None]  # one receiver, "head space" = d_model
        yW = y if beta is None else y - beta
        v = w[None]
    else:
        W, bias = (t.detach().float() if t is not None else None for t in _projection(ef.model, rg))
        yW = y if bias is None else y - bias
        if beta is not None:
            yW = yW - torch.einsum("d,nde->ne", beta, W)
        v = torch.einsum("d,nde->ne", w, W)
    n = g.shape[2]
    H = (g * inv_s[..., None, None]).view(reps, B, n_pos, n, -1).sum(0)  # [B, pos, n, e]
    # built in [batch, pos, d_model, n] so that flattening needs no copy
    T = H.transpose(-1, -2) if rg.input is None else torch.einsum("bpne,nde->bpdn", H, W)
    T.mul_(w[:, None])
    C = ((g * yW).sum(-1) / d * inv_s[..., None]).view(reps, B, n_pos, n)  # b / s per row
    T.sub_(torch.einsum("rbpn,rbpd->bpdn", C, xh.view(reps, B, n_pos, d)))
    if layer:
        a = torch.einsum("rpne,ne->rpn", g, v) / d
        T.sub_((a * inv_s[..., None]).view(reps, B, n_pos, n).sum(0)[:, :, None, :])
    return T.reshape(-1, n)


def _run(
    model: Any,
    graph: Graph,
    target_kwargs: Mapping[str, Any],
    ref: list[torch.Tensor],
    deltas: list[torch.Tensor] | None,
    metric: Metric,
    alphas: torch.Tensor | None,
    batch: int,
    acc: dict[int, torch.Tensor],
) -> tuple[float, list[torch.Tensor] | None]:
    reps = 1 if alphas is None else len(alphas)
    ef = EdgeForward(
        model,
        graph,
        ref=ref,
        alphas=None if alphas is None else alphas.repeat_interleave(batch),
        grad=True,
        record=deltas is None,
    )
    with torch.enable_grad(), ef.active():
        logits = model(**_tile(target_kwargs, reps))
        value = metric(logits).sum()
        keys = sorted(ef.deltas)
        raw = torch.autograd.grad(value, [ef.deltas[k] for k in keys], allow_unused=True)
    grads: list[torch.Tensor | None] = [None] * len(graph.receiver_groups)
    for k, g in zip(keys, raw):
        grads[k] = g
    if deltas is None:  # the clean run itself: Delta_u = a^ref_u - a_u
        deltas = [r.to(ef.acts[i].device) - ef.acts[i] for i, r in enumerate(ref)]
    _accumulate(graph, ef, grads, reps, acc)
    return float(value.detach()), deltas


def eap(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Mapping[str, Any],
    metric: Metric,
    graph: Graph | None = None,
    reference_is_cache: bool | None = None,
) -> EdgeScores:
    """EAP scores of every edge: the first-order estimate of patching that edge alone (one forward + backward).

    ``target_kwargs``: the teacher-forced forward's inputs; ``reference``: the reference
    inputs teacher-forced on the same tokens, or a cache from
    :func:`~hooked_asr.circuits.path_patching.record_graph_reference` (told apart by their keys). ``metric`` maps
    logits to one value per row; rows are summed.
    """
    graph = graph or Graph.from_model(model)
    _check_kwargs(target_kwargs)
    ref = _reference_acts(model, graph, reference, reference_is_cache, target_kwargs)
    scores = torch.zeros(graph.allowed.shape, dtype=torch.float64)
    batch = _batch(target_kwargs)
    acc: dict[int, torch.Tensor] = {}
    clean, deltas = _run(model, graph, target_kwargs, ref, None, metric, None, batch, acc)
    _contract(graph, acc, deltas, scores)
    return EdgeScores(graph, scores.float(), "EAP", 1, {"clean_metric": clean})


class CompletenessWarning(UserWarning):
    """EAP-IG's input scores do not add up to the true effect of the reference (too few steps)."""


@dataclass
class Completeness:
    """How far EAP-IG is from its own identity: the scores of the graph's input nodes (``*.embed``, the
    points the path interpolates) sum to ``m(reference) - m(clean)`` in the limit of many steps.

    ``rel_error = |sum - effect| / |effect|``; ``history``: ``(steps, sum, rel_error)`` per step count tried."""

    input_sum: float
    effect: float
    steps: int
    tolerance: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    capped: bool = False

    @property
    def rel_error(self) -> float:
        if self.effect == 0:
            return 0.0 if self.input_sum == 0 else float("inf")
        return abs(self.input_sum - self.effect) / abs(self.effect)

    @property
    def holds(self) -> bool:
        return self.rel_error <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_sum": self.input_sum,
            "effect": self.effect,
            "rel_error": self.rel_error,
            "steps": self.steps,
            "tolerance": self.tolerance,
            "holds": self.holds,
            "capped": self.capped,
            "history": [list(h) for h in self.history],
        }


def _input_sum(graph: Graph, scores: torch.Tensor) -> float:
    rows = [i for i, n in enumerate(graph.senders) if n.kind == "embed"]
    return float((scores[rows] * graph.allowed[rows]).sum())


@torch.no_grad()
def _true_effect(
    model: Any, graph: Graph, target_kwargs: Mapping[str, Any], ref: list[torch.Tensor], metric: Metric, clean: float
) -> float:
    """``m(every edge patched) - m(clean)``: the end of the IG path minus its start (every edge patched
    is the reference run, :mod:`hooked_asr.circuits.graph`)."""
    ef = EdgeForward(model, graph, ref=ref, mask=graph.allowed)
    with ef.active():
        return float(metric(model(**target_kwargs)).sum()) - clean


def eap_ig(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Mapping[str, Any],
    metric: Metric,
    graph: Graph | None = None,
    steps: int | str = 8,
    batch_size: int = 4,
    reference_is_cache: bool | None = None,
    progress: bool = True,
    *,
    tolerance: float = 0.10,
    max_steps: int = 216,
    check: bool = True,
) -> EdgeScores:
    """EAP-IG scores of every edge: gradients averaged over ``steps`` points from the clean to the
    reference embeddings (midpoint rule), ``batch_size`` steps per batched forward + backward.

    Completeness is checked (``check=True``, one more forward): the input nodes' scores must sum to the
    true effect ``m(reference) - m(clean)`` within ``tolerance`` (relative); it is stored in
    ``scores.completeness`` / ``scores.meta["completeness"]`` and a :class:`CompletenessWarning` is raised
    beyond it. ``steps='auto'``: start at 8 steps and triple them (the midpoints of ``m`` steps are among
    those of ``3 m``, so every gradient already taken is kept) until completeness holds or ``max_steps``
    is reached (then ``completeness.capped`` is True and the warning says so).
    """
    import warnings

    from tqdm.auto import tqdm

    auto = steps == "auto"
    if auto:
        steps = 8
    if not isinstance(steps, int) or steps < 1 or batch_size < 1:
        raise ValueError(
            f"steps must be an int >= 1 or 'auto' and batch_size >= 1, got steps={steps!r}, batch_size={batch_size}"
        )
    if auto and max_steps < steps:
        raise ValueError(f"max_steps={max_steps} is below the first step count {steps}")
    graph = graph or Graph.from_model(model)
    _check_kwargs(target_kwargs)
    ref = _reference_acts(model, graph, reference, reference_is_cache, target_kwargs)
    batch = _batch(target_kwargs)
    clean_ef = EdgeForward(model, graph, record=True)
    with torch.no_grad(), clean_ef.active():
        clean = float(metric(model(**target_kwargs)).sum())
    deltas = [r.to(clean_ef.acts[i].device) - clean_ef.acts[i] for i, r in enumerate(ref)]
    del clean_ef
    effect = _true_effect(model, graph, target_kwargs, ref, metric, clean) if check else None
    acc: dict[int, torch.Tensor] = {}  # sum over steps of dm/dx_v per receiver group; contracted per check
    done: set[float] = set()
    history: list[tuple[int, float, float]] = []
    n = steps
    while True:
        alphas = [(k + 0.5) / n for k in range(n)]
        new = torch.tensor([a for a in alphas if round(a, 12) not in done], dtype=torch.float64)
        done.update(round(a, 12) for a in alphas)
        for s in tqdm(range(0, len(new), batch_size), desc=f"EAP-IG steps ({n})", disable=not progress, unit="batch"):
            _run(model, graph, target_kwargs, ref, deltas, metric, new[s : s + batch_size].float(), batch, acc)
        scores = torch.zeros(graph.allowed.shape, dtype=torch.float64)
        _contract(graph, acc, deltas, scores)
        scores = scores / n
        if effect is None:
            break
        comp = Completeness(_input_sum(graph, scores), effect, n, tolerance)
        history.append((n, comp.input_sum, comp.rel_error))
        if not auto or comp.holds or 3 * n > max_steps:
            break
        n *= 3
    meta: dict[str, Any] = {"clean_metric": clean}
    out = EdgeScores(graph, scores.float(), "EAP-IG", n, meta)
    if effect is not None:
        comp = Completeness(history[-1][1], effect, n, tolerance, history, capped=auto and not comp.holds)
        meta["completeness"] = comp.as_dict()
        if not comp.holds:
            warnings.warn(
                f"EAP-IG completeness: the input nodes' scores sum to {comp.input_sum:.4g}, the true effect "
                f"m(reference) - m(clean) is {effect:.4g} ({100 * comp.rel_error:.0f} % off, tolerance "
                f"{100 * tolerance:.0f} %) with {n} steps"
                + (f" (capped at max_steps={max_steps})" if comp.capped else "; pass steps='auto' (or more steps)"),
                CompletenessWarning,
                stacklevel=2,
            )
    return out


def _batch(kwargs: Mapping[str, Any]) -> int:
    for k in ("input_features", "decoder_input_ids", "input_ids"):
        v = kwargs.get(k)
        if isinstance(v, torch.Tensor):
            return v.shape[0]
    raise ValueError(f"cannot tell the batch size from the inputs {sorted(kwargs)}; pass input_features")


__all__ = ["Completeness", "CompletenessWarning", "EdgeScores", "Metric", "eap", "eap_ig"]
