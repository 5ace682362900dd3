"""The computational graph of an encoder-decoder model, and how an edge is cut in a forward.

**Nodes** (senders) write into a residual stream; **receivers** are the inputs that read it::

    senders    encoder.embed  encoder.blocks.l.attn.head.h  encoder.blocks.l.mlp
               decoder.embed  decoder.blocks.l.attn.head.h  decoder.blocks.l.cross_attn.head.h  decoder.blocks.l.mlp
    receivers  <head><q> <head><k> <head><v>  (every attention head, all three kinds)   <mlp>   logits

``*.embed`` is ``{stack}.blocks.0.hook_resid_pre`` (the encoder's conv + positions; the
decoder's token + position embedding), a head's output is its result ``z_h W_O[h]``
(:mod:`hooked_asr.circuits.heads`) and an MLP's output is ``hook_mlp_out``. The residual
stream a receiver reads is the sum of the outputs of the senders before it plus constants
(the attention output biases ``b_O``)::

    x_v = sum_{u upstream of v} a_u + const

An edge ``u -> v`` joins every sender to every receiver downstream of it in the same stream,
and every **encoder** sender to the key and value inputs of every decoder cross-attention
head: the encoder's residual reaches the decoder only through ``finish_encoder`` (Whisper:
``encoder.ln_final``) and the cross-attention ``W_K``, ``W_V``. Models without
cross-attention (Qwen2-Audio) get the decoder graph; their audio enters as embeddings.

**Cutting edges.** With a set ``P`` of patched edges and reference activations ``a^ref``,
receiver ``v`` reads (the ACDC / edge-patching semantics of Conmy et al. 2023)::

    x~_v = x_v + sum_{u : (u, v) in P} (a^ref_u - a_u)

where ``x_v`` and ``a_u`` are the values in the same (patched) forward, so a receiver that
changes changes everything downstream of it through the edges that are not patched. The
norm before a receiver is nonlinear, so ``x~_v`` cannot be added after it: each rewritten
receiver recomputes its own input, ``q_h = norm(x~_v) W_Q[h] + b_Q[h]`` (likewise k, v;
``norm`` is the block's ``ln1`` / ``ln_cross``, and for cross-attention keys and values the
model's ``finish_encoder``), ``mlp_in = ln2(x~_v)``, ``logits = ln_final(x~_v) W_U``, by
rewriting the hooks ``hook_q / hook_k / hook_v`` head by head, ``ln2.hook_normalized`` and
``decoder.ln_final.hook_normalized``. Patching every edge gives the reference run exactly
(``x~_v = x^ref_v``); patching none gives the clean run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float

from hooked_asr.circuits.heads import head_results, z_name
from hooked_asr.components.norm import LayerNorm, RMSNorm

_SLOT = {"embed": 0, "attn": 0, "cross_attn": 1, "mlp": 2}


@dataclass(frozen=True)
class Node:
    """A sender: ``name`` is the component string (``decoder.blocks.3.cross_attn.head.2``,
    ``encoder.blocks.1.mlp``) or ``{stack}.embed``."""

    name: str
    stack: str
    layer: int  # -1 for the embeddings
    kind: str  # embed | attn | cross_attn | mlp
    head: int | None = None

    @property
    def component(self) -> str:
        """What node-level patching calls this sender (:mod:`hooked_asr.patching.components`)."""
        return f"{self.stack}.blocks.0.hook_resid_pre" if self.kind == "embed" else self.name

    @property
    def order(self) -> tuple[int, int]:
        return (self.layer, _SLOT[self.kind])


@dataclass(frozen=True)
class Receiver:
    """One input of a node: ``<head><q|k|v>``, an MLP's input, or ``logits``."""

    name: str
    node: str  # the node whose input this is (``decoder.blocks.1.cross_attn.head.3``, ``logits``)
    stack: str  # the stream it reads: cross-attention k / v read the encoder's
    layer: int
    kind: str  # attn | cross_attn | mlp | logits
    head: int | None = None
    input: str | None = None  # q | k | v for heads


@dataclass
class _SenderGroup:
    """Senders whose outputs come from one hook: every head of one attention, an MLP, an embedding."""

    stack: str
    layer: int
    kind: str
    hook: str
    index: list[int]  # rows of Graph.senders


@dataclass
class _ReceiverGroup:
    """Receivers rewritten at one hook: the q (or k, v) of every head of one attention, an MLP input, logits."""

    stack: str  # the stream read
    layer: int
    kind: str
    input: str | None
    hook: str  # the hook whose value is recomputed (and whose gradient EAP reads)
    x_hook: str  # the residual the receiver reads
    index: list[int]  # columns of Graph.receivers
    owner: str  # the module that owns the norm / the projection ("decoder.blocks.1")
    order: tuple[int, int]
    upstream: list[int] = field(default_factory=list)  # sender groups with an edge into this group


@dataclass
class Graph:
    """Senders, receivers and which (sender, receiver) pairs are edges.

    ``allowed[i, j]`` is True when ``senders[i] -> receivers[j]`` is an edge. Build with
    :meth:`from_model`.

    >>> g = Graph.from_model(model)
    >>> g.n_edges, g.edge_name(0, 5)
    """

    senders: list[Node]
    receivers: list[Receiver]
    allowed: Bool[torch.Tensor, "sender receiver"]
    sender_groups: list[_SenderGroup] = field(repr=False)
    receiver_groups: list[_ReceiverGroup] = field(repr=False)

    # ---- building ------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, stacks: Iterable[str] | None = None) -> "Graph":
        """The full graph of ``model``: both stacks when the decoder has cross-attention, else the decoder's.

        ``stacks=("decoder",)`` drops the encoder (then cross-attention keys and values
        are not receivers: the encoder output is held at its clean value).
        """
        has_cross = "cross_attn" in model.attention_kinds("decoder")
        if stacks is None:
            stacks = ("encoder", "decoder") if has_cross else ("decoder",)
        stacks = list(stacks)
        bad = [s for s in stacks if s not in ("encoder", "decoder")]
        if bad or not stacks:
            raise ValueError(f"stacks must be a subset of ('encoder', 'decoder'), got {stacks}")
        if "encoder" in stacks and not has_cross:
            raise ValueError(
                "this model's decoder has no cross-attention: the audio enters the decoder as embeddings "
                "(decoder.embed), so encoder nodes have no edge into the decoder; use stacks=('decoder',)"
            )
        senders: list[Node] = []
        receivers: list[Receiver] = []
        sgroups: list[_SenderGroup] = []
        rgroups: list[_ReceiverGroup] = []

        def add_senders(stack: str, layer: int, kind: str, hook: str, nodes: list[Node]) -> None:
            sgroups.append(_SenderGroup(stack, layer, kind, hook, list(range(len(senders), len(senders) + len(nodes)))))
            senders.extend(nodes)

        def add_receivers(
            stack: str,
            layer: int,
            kind: str,
            inp: str | None,
            hook: str,
            x_hook: str,
            owner: str,
            order: tuple[int, int],
            recs: list[Receiver],
        ) -> None:
            rgroups.append(
                _ReceiverGroup(
                    stack,
                    layer,
                    kind,
                    inp,
                    hook,
                    x_hook,
                    list(range(len(receivers), len(receivers) + len(recs))),
                    owner,
                    order,
                )
            )
            receivers.extend(recs)

        for stack in stacks:
            n_layers = model.n_layers[stack]
            add_senders(
                stack, -1, "embed", f"{stack}.blocks.0.hook_resid_pre", [Node(f"{stack}.embed", stack, -1, "embed")]
            )
            for l in range(n_layers):
                blk = f"{stack}.blocks.{l}"
                for kind in model.attention_kinds(stack):
                    attn = model.attention(stack, l, kind)
                    base = f"{blk}.{kind}"
                    heads = [Node(f"{base}.head.{h}", stack, l, kind, h) for h in range(attn.n_heads)]
                    for inp in ("q", "k", "v"):
                        n = attn.n_heads if inp == "q" else attn.n_kv_heads
                        recs = [
                            Receiver(f"{base}.head.{h}<{inp}>", f"{base}.head.{h}", stack, l, kind, h, inp)
                            for h in range(n)
                        ]
                        if kind == "cross_attn" and inp != "q":
                            if "encoder" not in stacks:
                                continue
                            n_enc = model.n_layers["encoder"]
                            recs = [Receiver(r.name, r.node, "encoder", n_enc, kind, r.head, inp) for r in recs]
                            add_receivers(
                                "encoder",
                                n_enc,
                                kind,
                                inp,
                                f"{base}.hook_{inp}",
                                f"encoder.blocks.{n_enc - 1}.hook_resid_post",
                                base,
                                (n_enc, 0),
                                recs,
                            )
                        else:
                            x_hook = f"{blk}.hook_resid_pre" if kind == "attn" else f"{blk}.hook_resid_mid"
                            add_receivers(
                                stack, l, kind, inp, f"{base}.hook_{inp}", x_hook, base, (l, _SLOT[kind]), recs
                            )
                    add_senders(stack, l, kind, z_name(stack, l, kind), heads)
                mid = (
                    f"{blk}.hook_resid_mid_cross"
                    if f"{blk}.hook_resid_mid_cross" in model.hook_dict
                    else f"{blk}.hook_resid_mid"
                )
                add_receivers(
                    stack,
                    l,
                    "mlp",
                    None,
                    f"{blk}.ln2.hook_normalized",
                    mid,
                    f"{blk}.ln2",
                    (l, 2),
                    [Receiver(f"{blk}.mlp", f"{blk}.mlp", stack, l, "mlp")],
                )
                add_senders(stack, l, "mlp", f"{blk}.hook_mlp_out", [Node(f"{blk}.mlp", stack, l, "mlp")])
            if stack == "decoder":
                add_receivers(
                    "decoder",
                    n_layers,
                    "logits",
                    None,
                    "decoder.ln_final.hook_normalized",
                    f"decoder.blocks.{n_layers - 1}.hook_resid_post",
                    "decoder.ln_final",
                    (n_layers, 0),
                    [Receiver("logits", "logits", "decoder", n_layers, "logits")],
                )
        allowed = torch.zeros(len(senders), len(receivers), dtype=torch.bool)
        for g in rgroups:
            for si, sg in enumerate(sgroups):
                if sg.stack == g.stack and (sg.layer, _SLOT[sg.kind]) < g.order:
                    allowed[torch.tensor(sg.index)[:, None], torch.tensor(g.index)[None, :]] = True
                    g.upstream.append(si)
        for hook in {g.hook for g in rgroups} | {g.x_hook for g in rgroups} | {g.hook for g in sgroups}:
            model.check_hook_name(hook)
        return cls(senders, receivers, allowed, sgroups, rgroups)

    # ---- lookups --------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return int(self.allowed.sum())

    def edge_name(self, i: int, j: int) -> str:
        return f"{self.senders[i].name}->{self.receivers[j].name}"

    def sender_index(self, names: Iterable[str]) -> list[int]:
        """Rows of the named senders; a prefix (``decoder.blocks.1.cross_attn``) selects every head under it."""
        return _match([n.name for n in self.senders], names, "sender", "senders")

    def receiver_index(self, names: Iterable[str]) -> list[int]:
        """Columns of the named receivers: ``decoder.blocks.1.cross_attn.head.3<k>``, a whole head
        (all its inputs), a prefix (``decoder.blocks.1.cross_attn``: every head, every input),
        ``decoder.blocks.1.mlp``, ``logits``. ``"<k>"``-style suffixes also filter a prefix."""
        out: list[int] = []
        names = [names] if isinstance(names, str) else list(names)
        for spec in names:
            base, inp = (spec[: spec.index("<")], spec[spec.index("<") :]) if "<" in spec else (spec, "")
            hits = [
                j
                for j, r in enumerate(self.receivers)
                if (r.name == spec) or ((r.node == base or r.node.startswith(base + ".")) and r.name.endswith(inp))
            ]
            if not hits:
                raise KeyError(
                    f"no receiver matches {spec!r}; receivers look like "
                    f"{self.receivers[0].name!r}, 'decoder.blocks.0.mlp', 'logits'"
                )
            out += [j for j in hits if j not in out]
        return out

    def edge_mask(
        self, senders: Iterable[str], receivers: Iterable[str] | None = None
    ) -> Bool[torch.Tensor, "sender receiver"]:
        """Edges from ``senders`` to ``receivers`` (``None``: every receiver downstream)."""
        m = torch.zeros_like(self.allowed)
        rows = self.sender_index(senders)
        cols = list(range(len(self.receivers))) if receivers is None else self.receiver_index(receivers)
        m[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = True
        m &= self.allowed
        if not m.any():
            raise ValueError(
                f"no edge joins senders {list(senders)} to receivers {receivers}: a receiver must "
                f"read the sender's stream after it (encoder senders reach the decoder through "
                f"cross-attention <k>/<v>)"
            )
        return m

    def sender_hooks(self) -> list[str]:
        """The hooks a reference run must record for this graph."""
        return [g.hook for g in self.sender_groups]

    def sender_activations(
        self, model: Any, acts: Mapping[str, torch.Tensor]
    ) -> list[Float[torch.Tensor, "n batch pos d_model"]]:
        """Every sender's output, one tensor per sender group (heads' results from ``hook_z``)."""
        out = []
        for g in self.sender_groups:
            a = acts[g.hook]
            if g.kind in ("attn", "cross_attn"):
                a = head_results(model, {g.hook: a}, g.stack, g.layer, g.kind).movedim(-2, 0)
            else:
                a = a[None]
            out.append(a)
        return out


def _match(names: list[str], specs: Iterable[str], what: str, plural: str) -> list[int]:
    specs = [specs] if isinstance(specs, str) else list(specs)
    out: list[int] = []
    for s in specs:
        hits = [i for i, n in enumerate(names) if n == s or n.startswith(s + ".")]
        if not hits:
            raise KeyError(
                f"no {what} matches {s!r}; {plural} look like {names[1] if len(names) > 1 else names[0]!r}, "
                f"'encoder.embed', 'decoder.blocks.0.mlp'"
            )
        out += [i for i in hits if i not in out]
    return out


# ---- the forward that realises cut edges and reads receiver gradients --------------------
def _projection(model: Any, g: _ReceiverGroup) -> tuple[torch.Tensor, torch.Tensor | None]:
    stack, _, layer, kind = g.owner.split(".")
    attn = model.attention(stack, int(layer), kind)  # raw k / v heads (hooks carry n_kv_heads)
    return getattr(attn, f"W_{g.input.upper()}"), getattr(attn, f"b_{g.input.upper()}")


def _norm_fn(model: Any, g: _ReceiverGroup) -> Callable[[torch.Tensor], torch.Tensor]:
    """The nonlinearity between the residual and the receiver, as the model computes it."""
    if g.kind == "cross_attn" and g.input in ("k", "v"):
        # What the decoder's keys and values read: ``finish_encoder``, which for a model with
        # cross-attention (Whisper) is the encoder's final norm; the module itself lets the
        # gradient use the closed-form VJP below.
        ln = getattr(getattr(model, "encoder", None), "ln_final", None)
        return (
            ln
            if isinstance(ln, (LayerNorm, RMSNorm)) and not getattr(model.cfg.encoder, "pool_stride", 0)
            else model.finish_encoder
        )
    if g.kind in ("attn", "cross_attn"):
        return model.get_submodule(g.owner.rsplit(".", 1)[0] + (".ln1" if g.kind == "attn" else ".ln_cross"))
    return model.get_submodule(g.owner)  # ln2 / decoder.ln_final


def receiver_input_map(model: Any, g: _ReceiverGroup) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x [batch, pos, n, d_model] -> what the hook carries``: ``norm(x) W[h] + b[h]`` per head, or ``norm(x)``."""
    norm = _norm_fn(model, g)
    if g.input is None:
        return lambda x: norm(x[:, :, 0])
    W, b = _projection(model, g)

    def f(x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bpnm,nmd->bpnd", norm(x), W.to(x.dtype))
        return y if b is None else y + b.to(x.dtype)

    return f


class EdgeForward:
    """Hooks for one forward in which edges are cut, and/or receiver gradients are read.

    ``ref``: reference sender activations (:meth:`Graph.sender_activations` of a reference
    run); ``mask[i, j]``: patch edge ``i -> j`` (``x~_v`` of the module docstring).
    ``alphas``: one value per batch row; the embeddings of row ``r`` become
    ``a + alphas[r] (a^ref - a)`` (the integrated-gradients path of EAP-IG).
    ``grad=True`` adds a zero ``delta`` at every receiver hook, whose gradient after a backward
    gives ``dm/dx_v`` for every receiver (:mod:`.eap`).
    ``record=True`` keeps every sender's output of this forward (:attr:`acts`).
    """

    def __init__(
        self,
        model: Any,
        graph: Graph,
        *,
        ref: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        alphas: torch.Tensor | None = None,
        grad: bool = False,
        record: bool = False,
    ):
        if (mask is not None or alphas is not None) and ref is None:
            raise ValueError("cutting edges or interpolating embeddings needs the reference activations (ref=)")
        self.model, self.graph, self.ref, self.grad, self.record = model, graph, ref, grad, record
        self.mask = (
            None if mask is None else (mask & graph.allowed if mask.dtype == torch.bool else mask * graph.allowed)
        )
        self.alphas = alphas
        self.x: dict[str, torch.Tensor] = {}
        self.acts: dict[int, torch.Tensor] = {}  # sender group -> [n, batch, pos, d_model] (record=True)
        self.diffs: dict[int, torch.Tensor] = {}  # sender group -> a^ref - a, [batch, pos, d_model, n] (mask given)
        self.deltas: dict[int, torch.Tensor] = {}  # receiver group -> delta (grad mode)
        self.outputs: dict[int, torch.Tensor] = {}  # receiver group -> the hook's value (grad mode)
        self._busy = False
        self._fired: set[str] = set()

    # receivers of group g whose inputs are rewritten in this forward
    def _touched(self, gi: int) -> torch.Tensor | None:
        if self.mask is None:
            return None
        cols = self.graph.receiver_groups[gi].index
        sub = self.mask[:, cols]
        return sub if bool(sub.any()) else None

    def _extra(self, gi: int, sub: torch.Tensor) -> torch.Tensor | None:
        """``sum_u M[u, v] (a^ref_u - a_u)`` for the receivers of group ``gi``: ``[batch, pos, n, d_model]``."""
        g = self.graph.receiver_groups[gi]
        total = None
        for si in g.upstream:
            if si not in self.diffs:
                continue
            w = sub[self.graph.sender_groups[si].index]
            if not bool(w.any()):
                continue
            D = self.diffs[si]  # [batch, pos, d_model, n_u]
            term = D @ w.to(D.device, D.dtype)  # [batch, pos, d_model, n]
            total = term if total is None else total + term
        return None if total is None else total.transpose(-1, -2)

    def _hook_fns(self) -> dict[str, list[Callable]]:
        fns: dict[str, list[Callable]] = {}
        g = self.graph
        if self.alphas is not None:
            for si, sg in enumerate(g.sender_groups):
                if sg.kind == "embed":
                    fns.setdefault(sg.hook, []).append(self._interp_fn(si))
        if self.record or self.mask is not None:
            for si, sg in enumerate(g.sender_groups):
                fns.setdefault(sg.hook, []).append(self._record_fn(si))
        for rg in g.receiver_groups:
            fns.setdefault(rg.x_hook, []).append(self._capture_fn(rg.x_hook))
        for gi, rg in enumerate(g.receiver_groups):
            fns.setdefault(rg.hook, []).append(self._receiver_fn(gi))
        return fns

    def _interp_fn(self, si: int) -> Callable:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            ref = self.ref[si][0].to(act.device, act.dtype)
            _check_positions(ref[None], act[None], hook.name)
            if ref.shape[0] not in (1, act.shape[0]):
                ref = ref.repeat(act.shape[0] // ref.shape[0], *([1] * (ref.ndim - 1)))
            a = self.alphas.to(act.device, act.dtype).view(-1, *([1] * (act.ndim - 1)))
            return act + a * (ref - act)

        return fn

    def _record_fn(self, si: int) -> Callable:
        sg = self.graph.sender_groups[si]

        def fn(act: torch.Tensor, hook: Any) -> None:
            a = act.detach()
            with torch.no_grad():
                if sg.kind in ("attn", "cross_attn"):
                    a = head_results(self.model, {sg.hook: a}, sg.stack, sg.layer, sg.kind).movedim(-2, 0)
                else:
                    a = a[None]
                if self.record:
                    self.acts[si] = a
                if self.mask is not None and bool(self.mask[sg.index].any()):
                    ref = self.ref[si].to(a.device, a.dtype)
                    _check_positions(ref, a, sg.hook)
                    # once per sender group, in the layout every receiver's matmul wants
                    self.diffs[si] = (ref - a).movedim(0, -1).contiguous()

        return fn

    def _capture_fn(self, name: str) -> Callable:
        def fn(act: torch.Tensor, hook: Any) -> None:
            self.x[name] = act

        return fn

    def _receiver_fn(self, gi: int) -> Callable:
        rg = self.graph.receiver_groups[gi]
        f = receiver_input_map(self.model, rg)

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if self._busy:  # the norm being recomputed below fires this very hook (ln2, ln_final)
                return None
            self._fired.add(rg.hook)
            sub = self._touched(gi)
            if sub is not None:
                x = self.x[rg.x_hook]
                extra = self._extra(gi, sub)
                if extra is not None:
                    n = len(rg.index)
                    self._busy = True
                    try:
                        new = f(x.unsqueeze(2).expand(*x.shape[:2], n, x.shape[-1]) + extra)
                    finally:
                        self._busy = False
                    if rg.input is not None:
                        touched = sub.any(0).to(act.device)
                        act = torch.where(touched[None, None, :, None], new.to(act.dtype), act)
                    else:
                        act = new.to(act.dtype)
            if self.grad:
                d = torch.zeros_like(act, requires_grad=True)
                self.deltas[gi], self.outputs[gi] = d, act.detach()
                act = act + d
            return act

        return fn

    @contextlib.contextmanager
    def active(self) -> Iterator["EdgeForward"]:
        """``with ef.active(): model(**kwargs)``: the hooks live for the body, removed after."""
        hooks = [(name, _chain(fs)) for name, fs in self._hook_fns().items()]
        with self.model.hooks(fwd_hooks=hooks):
            yield self
        missing = [rg.hook for rg in self.graph.receiver_groups if rg.hook not in self._fired]
        if missing:
            raise RuntimeError(
                f"these receiver hooks did not fire: {missing[:3]}; run the full model on input_features "
                f"(not encoder_hidden_states), teacher-forced"
            )


def _chain(fs: list[Callable]) -> Callable:
    if len(fs) == 1:
        return fs[0]

    def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        for f in fs:
            out = f(act, hook)
            if out is not None:
                act = out
        return act

    return fn


def _check_positions(ref: torch.Tensor, cur: torch.Tensor, hook: str) -> None:
    if ref.shape[2:] != cur.shape[2:]:
        raise ValueError(
            f"'{hook}': the reference has shape {tuple(ref.shape[2:])} per item, this run {tuple(cur.shape[2:])}; "
            f"teacher-force the reference on the target's tokens (hooked_asr.patching.reference_inputs(model, kwargs, ref_audio))"
        )
    if ref.shape[1] not in (1, cur.shape[1]):
        raise ValueError(
            f"'{hook}': the reference has batch {ref.shape[1]}, this run {cur.shape[1]}; use batch 1 or the same batch"
        )


__all__ = ["EdgeForward", "Graph", "Node", "Receiver", "receiver_input_map"]
