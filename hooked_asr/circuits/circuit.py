"""Circuits: a set of edges of the graph, evaluated by actually patching everything outside it.

A circuit ``C`` keeps its edges at their clean values and patches every other edge
``u -> v`` of the graph to the reference (:func:`~hooked_asr.circuits.path_patching.run_with_patched_edges`),
so receivers outside the circuit's paths read the reference residual. With ``m_clean``
(no edge patched: the full model) and ``m_ref`` (every edge patched, which is exactly the
reference run)::

    faithfulness(C) = (m(C) - m_ref) / (m_clean - m_ref)

i.e. ``metric(circuit) / metric(full model)`` for the metric measured from the reference
run: 1 when the circuit alone carries the clean behaviour, 0 when it carries none of it.

    >>> scores = eap_ig(model, tf.kwargs, ref_cache, metric)
    >>> c = scores.circuit(50)
    >>> c.evaluate(model, tf.kwargs, ref_cache, metric).faithfulness
    >>> c.draw("circuit.png"); c.to_json("circuit.json")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float

from hooked_asr.circuits.graph import Graph
from hooked_asr.circuits.path_patching import as_reference_cache, run_with_patched_edges


@dataclass
class CircuitEvaluation:
    """``metric`` of the circuit, the full model and the reference run, and the faithfulness."""

    n_edges: int
    metric: float
    clean: float
    reference: float

    @property
    def faithfulness(self) -> float:
        den = self.clean - self.reference
        return float("nan") if den == 0 else (self.metric - self.reference) / den


@dataclass
class Circuit:
    """Edges ``edges[i, j]`` (``graph.senders[i] -> graph.receivers[j]``) kept clean; ``scores`` optional."""

    graph: Graph
    edges: Bool[torch.Tensor, "sender receiver"]
    scores: Float[torch.Tensor, "sender receiver"] | None = None
    method: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.edges.shape) != tuple(self.graph.allowed.shape):
            raise ValueError(
                f"edges must be [sender, receiver] = {tuple(self.graph.allowed.shape)}, got {tuple(self.edges.shape)}"
            )
        off = self.edges & ~self.graph.allowed
        if off.any():
            i, j = off.nonzero()[0].tolist()
            raise ValueError(
                f"{self.graph.edge_name(i, j)} is not an edge of the graph (the receiver does not read the sender's stream after it)"
            )

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    def edge_list(self) -> list[tuple[str, str, float | None]]:
        """``(sender, receiver, score)`` for every edge of the circuit, highest ``|score|`` first."""
        i, j = self.edges.nonzero(as_tuple=True)
        s = self.scores[i, j] if self.scores is not None else torch.zeros(len(i))
        order = torch.argsort(s.abs(), descending=True, stable=True)
        g = self.graph
        return [
            (g.senders[a].name, g.receivers[b].name, float(s[k]) if self.scores is not None else None)
            for k, a, b in zip(order.tolist(), i[order].tolist(), j[order].tolist())
        ]

    def nodes(self) -> list[str]:
        """The nodes the circuit's edges touch (senders and the receivers' nodes), in graph order."""
        out = {e[0]: None for e in self.edge_list()}
        out.update({self.graph.receivers[j].node: None for j in self.edges.any(0).nonzero().flatten().tolist()})
        order = {n.name: k for k, n in enumerate(self.graph.senders)}
        return sorted(out, key=lambda n: order.get(n, len(order)))

    def evaluate(
        self,
        model: Any,
        target_kwargs: Mapping[str, Any],
        reference: Mapping[str, Any],
        metric: Any,
        reference_is_cache: bool | None = None,
        baselines: tuple[float, float] | None = None,
    ) -> CircuitEvaluation:
        """Run the model with every edge outside the circuit patched; ``metric`` summed over rows.

        ``baselines=(clean, reference)`` reuses the two baseline values (a curve computes them once).
        """
        cache = as_reference_cache(model, self.graph, reference, reference_is_cache, target_kwargs)
        outside = self.graph.allowed & ~self.edges
        m = float(metric(run_with_patched_edges(model, target_kwargs, cache, outside, self.graph)).sum())
        clean, ref = (
            baselines if baselines is not None else circuit_baselines(model, self.graph, target_kwargs, cache, metric)
        )
        return CircuitEvaluation(self.n_edges, m, clean, ref)

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """``{"method", "n_edges", "nodes", "edges": [{"sender", "receiver", "score"}]}`` (to ``path`` if given)."""
        out = {
            "method": self.method,
            "n_edges": self.n_edges,
            "meta": self.meta,
            "nodes": self.nodes(),
            "edges": [{"sender": s, "receiver": r, "score": v} for s, r, v in self.edge_list()],
        }
        if path is not None:
            Path(path).write_text(json.dumps(out, indent=1))
        return out

    @classmethod
    def from_json(cls, graph: Graph, data: str | Path | Mapping[str, Any]) -> "Circuit":
        """Rebuild a circuit on ``graph`` from :meth:`to_json`'s output (a dict or a path)."""
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        s_idx = {n.name: k for k, n in enumerate(graph.senders)}
        r_idx = {r.name: k for k, r in enumerate(graph.receivers)}
        edges = torch.zeros_like(graph.allowed)
        scores = torch.zeros(graph.allowed.shape)
        for e in data["edges"]:
            if e["sender"] not in s_idx or e["receiver"] not in r_idx:
                raise KeyError(f"edge {e['sender']}->{e['receiver']} is not in this graph (another model?)")
            i, j = s_idx[e["sender"]], r_idx[e["receiver"]]
            edges[i, j] = True
            scores[i, j] = e["score"] or 0.0
        return cls(graph, edges, scores, data.get("method", ""), dict(data.get("meta", {})))

    def draw(self, path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
        """The circuit as a graph figure (matplotlib): encoder on the left, decoder on the right, one
        column per attention / MLP of each layer, heads stacked vertically; edge width ~ ``|score|``,
        red positive, blue negative; ``q``/``k``/``v`` inputs marked on the receiving end."""
        import matplotlib.pyplot as plt

        pos = _layout(self.graph)
        if ax is None:
            n_cols = max(x for x, _ in pos.values()) + 1
            fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n_cols), 5.0))
        else:
            fig = ax.figure
        edges = self.edge_list()
        smax = max((abs(v) for *_, v in edges if v is not None), default=1.0) or 1.0
        for s, r, v in edges:
            rec = self.graph.receivers[self.graph.receiver_index([r])[0]]
            (x0, y0), (x1, y1) = pos[s], pos[rec.node]
            w = 0.4 + 3.0 * (abs(v) / smax if v is not None else 0.3)
            color = "#555555" if v is None else ("#c0392b" if v > 0 else "#2e6fba")
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops=dict(
                    arrowstyle="-|>",
                    lw=w,
                    color=color,
                    alpha=0.55,
                    shrinkA=4,
                    shrinkB=4,
                    connectionstyle="arc3,rad=0.15",
                ),
            )
            if rec.input:
                ax.text(x1 - 0.12, y1 + 0.12, rec.input, fontsize=6, color=color)
        used = self.nodes()
        for name in used:
            x, y = pos[name]
            kind = "logits" if name == "logits" else name.split(".")[3] if name.count(".") >= 3 else "embed"
            c = {"attn": "#f5cba7", "cross_attn": "#abebc6", "mlp": "#d2b4de"}.get(kind, "#d5dbdb")
            ax.scatter([x], [y], s=160, color=c, edgecolor="k", zorder=3, lw=0.6)
            ax.text(x, y - 0.38, _short(name), ha="center", va="top", fontsize=5.5)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title or f"{self.method} circuit: {self.n_edges} edges, {len(used)} nodes", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=150, bbox_inches="tight")
        return fig


def _short(name: str) -> str:
    if name in ("logits", "encoder.embed", "decoder.embed"):
        return name.replace("encoder.", "enc ").replace("decoder.", "dec ")
    p = name.split(".")
    stack = "E" if p[0] == "encoder" else "D"
    kind = {"attn": "a", "cross_attn": "x", "mlp": "mlp"}[p[3]]
    return f"{stack}{p[2]}{kind}" + (f"{p[5]}" if len(p) > 5 else "")


def _layout(graph: Graph) -> dict[str, tuple[float, float]]:
    cols: dict[tuple[str, int, str], int] = {}
    for n in graph.senders:
        cols.setdefault((n.stack, n.layer, n.kind), len(cols))
    pos: dict[str, tuple[float, float]] = {}
    for n in graph.senders:
        y = 0.0 if n.head is None else n.head - (_n_heads(graph, n) - 1) / 2
        pos[n.name] = (float(cols[(n.stack, n.layer, n.kind)]), y)
    pos["logits"] = (float(len(cols)), 0.0)
    return pos


def _n_heads(graph: Graph, node: Any) -> int:
    return 1 + max(n.head for n in graph.senders if (n.stack, n.layer, n.kind) == (node.stack, node.layer, node.kind))


@torch.no_grad()
def circuit_baselines(
    model: Any, graph: Graph, target_kwargs: Mapping[str, Any], reference_cache: Mapping[str, torch.Tensor], metric: Any
) -> tuple[float, float]:
    """``(m_clean, m_ref)``: the metric with no edge patched and with every edge patched (= the reference run)."""
    clean = float(metric(model(**target_kwargs)).sum())
    ref = float(metric(run_with_patched_edges(model, target_kwargs, reference_cache, graph.allowed, graph)).sum())
    return clean, ref


# Circuit sizes of MIB's circuit-localization track (Mueller et al. 2025, "MIB: A Mechanistic
# Interpretability Benchmark"): the fractions of the graph's edges kept.
MIB_FRACTIONS = tuple(percent / 100 for percent in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100))


def faithfulness_curve(
    model: Any,
    scores: Any,
    target_kwargs: Mapping[str, Any],
    reference: Mapping[str, Any],
    metric: Any,
    ks: Iterable[int] = (10, 50, 200),
    progress: bool = True,
    *,
    fractions: Iterable[float] | None = None,
    absolute: bool = True,
) -> Any:
    """Faithfulness of the top-``k`` circuit of ``scores`` (:class:`~hooked_asr.circuits.eap.EdgeScores`)
    for each ``k`` (or each fraction of the graph's edges in ``fractions``: ``k = int(f * n_edges)``, as MIB),
    each evaluated by real patching; ``absolute``: rank by ``|score|`` (else by signed score, oriented so that
    the edges whose patching moves the metric towards the reference come first). ``reference``: a cache,
    the reference inputs or audio (run with the clean prompt). A DataFrame (k, fraction, n_nodes, metric,
    clean, reference, faithfulness)."""
    import pandas as pd
    from tqdm.auto import tqdm

    reference_cache = as_reference_cache(model, scores.graph, reference, target_kwargs=target_kwargs)
    base = circuit_baselines(model, scores.graph, target_kwargs, reference_cache, metric)
    if not absolute and base[1] < base[0]:
        # Signed ranking keeps first the edges whose patching moves m towards the reference (MIB scores
        # the loss -m, so its highest scores are those edges): here, the most negative scores of m
        # when m(reference) < m(clean), the most positive otherwise.
        from hooked_asr.circuits.eap import EdgeScores

        scores = EdgeScores(scores.graph, -scores.scores, scores.method, scores.steps, scores.meta)
    n = scores.graph.n_edges
    sizes = [int(f * n) for f in fractions] if fractions is not None else list(ks)
    rows = []
    for k in tqdm(sizes, desc="circuit faithfulness", disable=not progress):
        c = scores.circuit(k, absolute)
        ev = c.evaluate(model, target_kwargs, reference_cache, metric, baselines=base)
        rows.append(
            {
                "k": c.n_edges,
                "fraction": c.n_edges / n,
                "n_nodes": len(c.nodes()),
                "metric": ev.metric,
                "clean": ev.clean,
                "reference": ev.reference,
                "faithfulness": ev.faithfulness,
            }
        )
    return pd.DataFrame(rows)


def area_under(fractions: Iterable[float], values: Iterable[float]) -> float:
    """Trapezoidal area of ``values`` over ``fractions`` (MIB's ``evaluate_area_under_curve``, linear x)."""
    x, y = list(fractions), list(values)
    return float(sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)))


@dataclass
class MIBScores:
    """MIB's two integrated faithfulness scores over the circuit sizes ``fractions`` (:data:`MIB_FRACTIONS`):

    CPR (circuit performance ratio) = area under ``f(k)`` of the circuits ranked by signed score, oriented
    as MIB's (which scores the loss ``-m``): the edges whose patching moves ``m`` towards the reference
    first (higher is better: the circuit does the task); CMD (circuit-model distance) = area under ``|1 - f(k)|`` of the
    circuits ranked by ``|score|`` (0 is best: the circuit behaves as the model), with
    ``f = (m(C) - m(reference)) / (m(clean) - m(reference))``. Both curves are kept (``cpr_curve``,
    ``cmd_curve``). MIB also prunes edges that do not reach the logits before evaluating; this does not."""

    cpr: float
    cmd: float
    cpr_curve: Any
    cmd_curve: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpr": self.cpr,
            "cmd": self.cmd,
            "cpr_curve": self.cpr_curve.to_dict(orient="records"),
            "cmd_curve": self.cmd_curve.to_dict(orient="records"),
        }


def mib_scores(
    model: Any,
    scores: Any,
    target_kwargs: Mapping[str, Any],
    reference: Any,
    metric: Any,
    fractions: Iterable[float] = MIB_FRACTIONS,
    progress: bool = True,
) -> MIBScores:
    """CPR and CMD (:class:`MIBScores`) of ``scores`` by real patching: two faithfulness curves."""
    fractions = list(fractions)
    cache = as_reference_cache(model, scores.graph, reference, target_kwargs=target_kwargs)
    signed = faithfulness_curve(
        model, scores, target_kwargs, cache, metric, progress=progress, fractions=fractions, absolute=False
    )
    absol = faithfulness_curve(
        model, scores, target_kwargs, cache, metric, progress=progress, fractions=fractions, absolute=True
    )
    cpr = area_under(fractions, signed["faithfulness"])
    cmd = area_under(fractions, (1 - absol["faithfulness"]).abs())
    return MIBScores(cpr, cmd, signed, absol)


def plot_faithfulness(curve: Any, path: str | Path | None = None, ax: Any = None, label: str | None = None) -> Any:
    """Faithfulness against the number of edges (log x axis) from :func:`faithfulness_curve`."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
    else:
        fig = ax.figure
    ax.plot(curve["k"].clip(lower=1), curve["faithfulness"], "o-", label=label)
    ax.axhline(1.0, color="k", lw=0.6, ls="--")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("edges in circuit (top-k)")
    ax.set_ylabel("faithfulness")
    if label:
        ax.legend(fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


__all__ = [
    "MIB_FRACTIONS",
    "Circuit",
    "CircuitEvaluation",
    "MIBScores",
    "area_under",
    "circuit_baselines",
    "faithfulness_curve",
    "mib_scores",
    "plot_faithfulness",
]
