"""Sweeps: one intervention over many components and a dataset, as a tidy table.

For each item: the clean transcript is generated once, the reference run is recorded
once (teacher-forced on the clean transcript's tokens, so decoder positions line up),
then the components are run in chunks of ``batch_size``: the input is repeated
``batch_size`` times and row ``j`` gets the intervention on component ``j``, so one
batched forward (or one batched greedy decode) replaces ``batch_size`` separate ones.
Each run recomputes only what its patches change (see item_runs.py), and rows are batched
only where that pays on the device (``row_batching``: on CPU, teacher-forced encoder reruns
go one at a time and only their decoder parts are batched). :func:`patched_values` is the
same machinery on one fixed teacher-forced input (``patching_effects`` uses it).

The table has one row per (component, item, metric) with the patched ``value`` and the
``clean`` value; rows are appended to ``results_path`` (JSON lines) as they are made, and
a rerun with the same path skips what is already there, after checking that the file is of
the same sweep: model, weights, audio and options (see :mod:`hooked_asr.patching.results_file`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hooked_asr.fingerprint import data_hash, jsonable, model_identity, tensors_hash
from hooked_asr.patching.components import Component, parse_component
from hooked_asr.patching.item_runs import (
    DECODER,
    ItemRun,
    RowBatching,
    generation_settings,
    plan_chunks,
    row_batching,
    start_point,
)
from hooked_asr.patching.interventions import (
    Intervention,
    MissingPolicy,
    interpolate,
    mean_ablate,
    hook_names,
    patched,
    position_kind,
    zero_ablate,
)
from hooked_asr.patching.metrics import (
    MetricContext,
    Transcript,
    continuation_logprob,
    logit_difference,
    resolve_transcript_metrics,
)
from hooked_asr.patching.references import check_reference_prompt, make_reference
from hooked_asr.patching.references import reference_cache as one_reference_cache
from hooked_asr.patching.results_file import ResultsFile

LogitMetric = Callable[[torch.Tensor, Any, "SweepItem"], torch.Tensor]


@dataclass
class SweepItem:
    """One input. ``audio``: path, 1-D 16 kHz array, or features ``[1, n_mels, frames]``.
    ``reference``: the input ``a_ref`` is recorded from (same kinds), for interpolation.
    ``text``: what was said (WER, excess repetition). ``extra``: metric-specific fields
    (``acoustic_word``, ``contextual_word``, ``logit_diff=(position, token_a, token_b)``)."""

    id: str
    audio: Any
    reference: Any = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _logprob_metric(logits: torch.Tensor, tf: Any, item: SweepItem) -> torch.Tensor:
    return continuation_logprob(logits, tf.tokens, tf.prompt_len)


def _logit_diff_metric(logits: torch.Tensor, tf: Any, item: SweepItem) -> torch.Tensor:
    if "logit_diff" not in item.extra:
        raise KeyError(
            f"metric 'logit_diff' needs item.extra['logit_diff'] = (position, token_a, token_b) (item {item.id})"
        )
    pos, a, b = item.extra["logit_diff"]
    return logit_difference(logits, pos, a, b)


LOGIT_METRICS: dict[str, LogitMetric] = {"logprob": _logprob_metric, "logit_diff": _logit_diff_metric}


@dataclass
class SweepResult:
    """``table``: tidy rows (component, item, metric, value, clean, stack, layer, kind, head).
    ``transcripts`` (generation sweeps with ``keep_transcripts=True``): item -> component -> the
    patched transcript; ``clean_transcripts``: item -> the clean one."""

    table: Any  # pandas.DataFrame
    seconds: float = 0.0
    n_batched_runs: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    transcripts: dict[str, dict[str, str]] = field(default_factory=dict)
    clean_transcripts: dict[str, str] = field(default_factory=dict)

    def summary(self) -> Any:
        """Mean value per component and metric (wide), components in sweep order."""
        t = self.table
        if t.empty:
            return t
        order = list(dict.fromkeys(t["component"]))
        wide = t.pivot_table(index="component", columns="metric", values="value", aggfunc="mean")
        return wide.reindex(order)

    def heatmap(self, metric: str, stack: str, kind: str) -> tuple[np.ndarray, list[int]]:
        """``(values [layer, head], layers)``: mean of ``metric`` per head (NaN where not swept)."""
        t = self.table
        t = t[(t["metric"] == metric) & (t["stack"] == stack) & (t["kind"] == kind) & t["head"].notna()]
        if t.empty:
            raise ValueError(f"no head-level rows for metric={metric!r}, stack={stack!r}, kind={kind!r}")
        layers = sorted(int(x) for x in t["layer"].unique())
        n_heads = int(t["head"].max()) + 1
        out = np.full((len(layers), n_heads), np.nan)
        for (layer, head), v in t.groupby(["layer", "head"])["value"].mean().items():
            out[layers.index(int(layer)), int(head)] = v
        return out, layers


def _make_intervention(
    kind: str | Callable,
    comp: Component,
    row: int,
    alpha: float,
    ref_cache: Mapping | None,
    means: Mapping | None,
    missing: MissingPolicy,
    positions: Sequence[int] | None,
) -> Intervention:
    if callable(kind):
        return kind(comp, [row], ref_cache)
    if kind in ("interpolate", "patch"):
        return interpolate(comp, ref_cache, alpha, rows=[row], positions=positions, missing=missing)
    if kind == "zero":
        return zero_ablate(comp, alpha=alpha, rows=[row], positions=positions)
    if kind == "mean":
        if means is None:
            raise ValueError("intervention='mean' needs means=mean_activations(model, reference_inputs, components)")
        return mean_ablate(comp, means, alpha=alpha, rows=[row], positions=positions)
    raise ValueError(f"unknown intervention {kind!r}; use 'interpolate', 'patch', 'zero', 'mean' or a callable")


def _metric_functions(mode: str, metrics: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Name -> metric function for ``mode`` (transcript metrics, or logit metrics)."""
    if mode == "generate":
        return resolve_transcript_metrics(metrics)
    if mode != "teacher_forced":
        raise ValueError(f"mode must be 'generate' or 'teacher_forced', got {mode!r}")
    pairs = (
        metrics.items()
        if isinstance(metrics, Mapping)
        else [(m if isinstance(m, str) else getattr(m, "__name__", f"metric{i}"), m) for i, m in enumerate(metrics)]
    )
    out = {}
    for name, fn in pairs:
        if isinstance(fn, str):
            if fn not in LOGIT_METRICS:
                raise KeyError(f"unknown teacher-forced metric {fn!r}; built-in: {sorted(LOGIT_METRICS)}")
            fn = LOGIT_METRICS[fn]
        out[name] = fn
    return out


def _reference_cache(
    model: Any,
    item: SweepItem,
    reference: str | None,
    seed: int,
    clean_kwargs: Mapping[str, Any],
    comps: Sequence[Component],
) -> dict[str, torch.Tensor]:
    """The reference run's activations at ``comps``, teacher-forced on the clean run's decoder tokens
    (its prompt included: a language detected on noise never enters)."""
    ref_input = item.reference
    if ref_input is None:
        if reference is None:
            raise ValueError(f"item {item.id!r} has no reference input: set item.reference or pass reference='noise'")
        ref_input = make_reference(reference, item.audio, seed=seed)
    return one_reference_cache(model, clean_kwargs, ref_input, hook_names(model, comps))


@dataclass
class _SweepSpec:
    """What stays fixed over a sweep's items."""

    intervention: Any
    alpha: float
    mode: str
    metric_fns: dict[str, Any]
    reference: str | None
    reference_seed: int
    means: Mapping[str, torch.Tensor] | None
    missing: MissingPolicy
    positions: Sequence[int] | None
    batch_size: int
    max_new_tokens: int | None
    patched_max_new_tokens: int | None
    reuse: bool
    tf_kwargs: dict[str, Any]
    rows: RowBatching | None = None

    @property
    def needs_ref(self) -> bool:
        return self.intervention in ("interpolate", "patch") or callable(self.intervention)

    def chunks(self, comps: Sequence[Component]) -> list[list[Component]]:
        if self.mode == "teacher_forced":
            return plan_chunks(comps, self.batch_size, True, self.rows)
        return plan_chunks(comps, self.batch_size, split_at_resume=False)


def _run_chunk(
    run: ItemRun,
    spec: _SweepSpec,
    chunk: list[Component],
    clean: Transcript,
    clean_values: dict[str, float],
    ref_cache: Mapping | None,
    cap: int,
) -> list[dict[str, Any]]:
    """One batched run: row ``j`` carries the intervention on ``chunk[j]``; returns its table rows."""
    model, item, n = run.model, run.item, len(chunk)
    ivs = [
        _make_intervention(spec.intervention, c, j, spec.alpha, ref_cache, spec.means, spec.missing, spec.positions)
        for j, c in enumerate(chunk)
    ]
    start = min(start_point(c) for c in chunk)
    rows = []
    with patched(model, ivs) as tracker:
        tracker.reset()
        # Inside the patch context: encoder blocks start..end run with the patches live.
        encoded = run.encode_from(start, n)
        if spec.mode == "generate":
            outs = run.generate(n, encoded if run.can_share_gen else None, cap, chunk if start == DECODER else None)
            for c, out in zip(chunk, outs):
                ctx = MetricContext(item, clean, out)
                rows += [_row(c, item, name, fn(ctx), clean_values[name]) for name, fn in spec.metric_fns.items()]
        else:
            kv = run.shared_cross_kv(chunk, n) if start == DECODER else None
            logits, tf = run.teacher_forced(clean.tokens, n, encoded if run.can_share_tf else None, kv)
            rows += _teacher_forced_rows(spec, chunk, item, logits, tf, clean_values)
    return rows


def _teacher_forced_rows(
    spec: _SweepSpec, chunk: list[Component], item: Any, logits: torch.Tensor, tf: Any, clean_values: dict[str, float]
) -> list[dict[str, Any]]:
    rows = []
    for name, fn in spec.metric_fns.items():
        vals = fn(logits, tf, item)
        rows += [_row(c, item, name, float(vals[j]), clean_values[name]) for j, c in enumerate(chunk)]
    return rows


def _run_rows(
    run: ItemRun,
    spec: _SweepSpec,
    chunk: list[Component],
    clean: Transcript,
    clean_values: dict[str, Any],
    ref_cache: Mapping | None,
    cap: int,
) -> list[dict[str, Any]]:
    """One chunk's table rows: one batched run (:func:`_run_chunk`), or, teacher-forced when encoder
    reruns go fewer per run than the chunk holds (``spec.rows``), the encoder parts group by group,
    each from its own start point with its rows' patches, then the decoder part of the whole
    chunk as one batch (every patch sits in the encoder, so the decoder runs unpatched)."""
    groups = (
        run.encoder_groups(chunk, spec.rows.encoder)
        if spec.mode == "teacher_forced" and spec.rows is not None and run.can_share_tf
        else None
    )
    if groups is None:
        return _run_chunk(run, spec, chunk, clean, clean_values, ref_cache, cap)
    encoded = []
    for g in groups:
        comps = [chunk[i] for i in g]
        ivs = [
            _make_intervention(spec.intervention, c, j, spec.alpha, ref_cache, spec.means, spec.missing, spec.positions)
            for j, c in enumerate(comps)
        ]
        with patched(run.model, ivs) as tracker:
            tracker.reset()
            encoded.append(run.encode_from(min(start_point(c) for c in comps), len(g)))
    logits, tf = run.teacher_forced(clean.tokens, len(chunk), torch.cat(encoded))
    return _teacher_forced_rows(spec, chunk, run.item, logits, tf, clean_values)


def _sweep_item(
    model: Any,
    item: SweepItem,
    pending: list[Component],
    spec: _SweepSpec,
    emit: Callable[[list[dict[str, Any]]], None],
    bar: Any,
) -> int:
    """Every pending component of one item; returns the number of batched runs."""
    run = ItemRun(model, item, spec.tf_kwargs, spec.reuse)
    if run.can_share_gen or run.can_share_tf:
        run.encode_clean({start_point(c) for c in pending})
    clean = run.generate(
        1, run.encoded if run.can_share_gen else None, spec.max_new_tokens, record=spec.mode == "generate"
    )[0]
    ref_cache = (
        _reference_cache(
            model, item, spec.reference, spec.reference_seed, run.teacher_forced_inputs(clean.tokens).kwargs, pending
        )
        if spec.needs_ref
        else None
    )
    if spec.mode == "generate":
        base = MetricContext(item, clean, clean)
        clean_values = {k: fn(base) if k == TRANSCRIPT else float(fn(base)) for k, fn in spec.metric_fns.items()}
    else:
        logits, tf = run.clean_teacher_forced(clean.tokens)
        clean_values = {k: float(fn(logits, tf, item)[0]) for k, fn in spec.metric_fns.items()}
    cap = spec.patched_max_new_tokens or (2 * len(clean.tokens) + 16)
    if spec.max_new_tokens is not None:
        cap = min(cap, spec.max_new_tokens)
    chunks = spec.chunks(pending)
    for chunk in chunks:
        emit(_run_rows(run, spec, chunk, clean, clean_values, ref_cache, cap))
        bar.update(1)
    return len(chunks)


@torch.no_grad()
def patched_values(
    model: Any,
    forward_kwargs: Mapping[str, Any],
    comps: Iterable[str | Component],
    metric: Callable[[torch.Tensor], torch.Tensor],
    intervention: str | Callable[[Component, list[int], Mapping | None], Intervention] = "interpolate",
    alpha: float = 1.0,
    *,
    reference_cache: Mapping[str, torch.Tensor] | None = None,
    means: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 16,
    encoder_batch_size: int | None = None,
    share_encoder: bool = True,
) -> tuple[float, list[float]]:
    """``(clean, [value per component])``: ``metric(logits) -> [batch]`` of the teacher-forced
    ``model(**forward_kwargs)`` (batch 1) clean and with each component intervened on, through the
    sweep's batched runs (the same resume points, chunks and rows as :func:`sweep` teacher-forced)."""
    comps = [parse_component(model, c) for c in comps]
    if reference_cache is not None:
        check_reference_prompt(model, forward_kwargs, reference_cache)
    fns = {"value": lambda logits, tf, item: metric(logits)}
    spec = _SweepSpec(
        intervention,
        alpha,
        "teacher_forced",
        fns,
        None,
        0,
        means,
        "error",
        None,
        batch_size,
        None,
        None,
        share_encoder,
        {},
        row_batching(model.device, batch_size, encoder_batch_size),
    )
    item = SweepItem("inputs", None)
    run = ItemRun(model, item, {}, share_encoder, inputs=forward_kwargs)
    if run.can_share_tf:
        run.encode_clean({start_point(c) for c in comps})
    logits, tf = run.clean_teacher_forced([])
    clean = float(metric(logits)[0])
    got: dict[str, float] = {}
    for chunk in spec.chunks(comps):
        got.update(
            (r["component"], r["value"])
            for r in _run_rows(run, spec, chunk, Transcript([], None), {"value": clean}, reference_cache, 0)
        )
    return clean, [got[c.name] for c in comps]


def sweep(
    model: Any,
    items: Iterable[SweepItem],
    comps: Iterable[str | Component],
    intervention: str | Callable[[Component, list[int], Mapping | None], Intervention] = "interpolate",
    alpha: float = 1.0,
    *,
    mode: Literal["generate", "teacher_forced"] = "generate",
    metrics: Sequence[Any] | Mapping[str, Any] = ("changed", "wer_delta"),
    reference: str | None = None,
    reference_seed: int = 0,
    means: Mapping[str, torch.Tensor] | None = None,
    missing: MissingPolicy = "error",
    positions: Sequence[int] | None = None,
    batch_size: int = 16,
    encoder_batch_size: int | None = None,
    max_new_tokens: int | None = None,
    patched_max_new_tokens: int | None = None,
    share_encoder: bool = True,
    results_path: str | Path | None = None,
    progress: bool = True,
    teacher_forced_kwargs: Mapping[str, Any] | None = None,
    keep_transcripts: bool = False,
) -> SweepResult:
    """Run ``intervention`` on every component for every item; return a tidy table.

    ``intervention``: ``interpolate`` (``a~ = (1-alpha) a + alpha a_ref``; ``patch`` is
    alpha = 1), ``zero``, ``mean`` (needs ``means``), or ``fn(component, rows, ref_cache)
    -> Intervention``. ``reference``: build each item's reference input when it has none
    (``noise`` = RMS-matched white noise seeded by ``reference_seed``, ``silence``).
    ``mode='generate'``: greedy transcripts, ``metrics`` from
    :data:`~hooked_asr.patching.metrics.TRANSCRIPT_METRICS`; ``mode='teacher_forced'``:
    one forward over prompt + clean transcript, metrics from :data:`LOGIT_METRICS`
    (``logprob``, ``logit_diff``) or ``fn(logits, tf_inputs, item) -> [batch]``.
    ``missing``: decoder positions beyond the reference's tokens (a patched transcript
    longer than the clean one) raise, or with ``'keep'`` stay unpatched.
    ``patched_max_new_tokens`` caps patched decodes (default: ``2 * len(clean) + 16``).
    ``keep_transcripts`` (generation): keep every patched transcript in ``result.transcripts``.
    ``batch_size=1`` runs the components one at a time. Teacher-forced, rows are batched where it
    pays, per device (:func:`~hooked_asr.patching.item_runs.row_batching`; on CPU encoder reruns go
    one at a time and only their decoder parts are batched); ``encoder_batch_size`` sets the rows
    per encoder rerun.

    Each run recomputes only what its patches change: the item's encoder runs once; a patch
    in encoder block ``l`` reruns blocks ``l..`` from the clean residual at ``l`` (a head, or
    anything after the attention, from block ``l``'s clean head outputs ``attn.hook_z``); a decoder
    patch starts from the clean encoder output and (teacher-forced) reuses the clean
    cross-attention keys/values of every layer it does not patch. ``share_encoder=False``
    turns all of that off: every row runs the whole model (the plain reference).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    items = list(items)
    comps = [parse_component(model, c) for c in comps]
    if not comps:
        raise ValueError("no components to sweep; list them with hooked_asr.patching.components(model)")
    if batch_size < 1 or (encoder_batch_size is not None and encoder_batch_size < 1):
        raise ValueError(f"batch_size and encoder_batch_size must be >= 1, got {batch_size}, {encoder_batch_size}")
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise ValueError("components repeat in the list; each (component, item) pair is one row")
    for c in comps:
        position_kind(c.hook_name)  # fail early on unsupported hooks
    metric_fns = _metric_functions(mode, metrics)
    if keep_transcripts:
        if mode != "generate":
            raise ValueError("keep_transcripts=True keeps generated transcripts: use mode='generate'")
        metric_fns[TRANSCRIPT] = _patched_text
    spec = _SweepSpec(
        intervention,
        alpha,
        mode,
        metric_fns,
        reference,
        reference_seed,
        means,
        missing,
        positions,
        batch_size,
        max_new_tokens,
        patched_max_new_tokens,
        share_encoder,
        dict(teacher_forced_kwargs or {}),
        row_batching(model.device, batch_size, encoder_batch_size),
    )
    config = (
        _fingerprint(model, spec, intervention, reference, positions, means)
        if results_path is not None
        else {
            "intervention": intervention
            if isinstance(intervention, str)
            else getattr(intervention, "__name__", "custom"),
            "alpha": alpha,
            "mode": mode,
            "metrics": sorted(spec.metric_fns),
            "reference": reference,
            "reference_seed": reference_seed,
            "missing": missing,
        }
    )
    hashes = {it.id: _item_hash(it) for it in items} if results_path is not None else {}
    results = ResultsFile(results_path, config, sorted(spec.metric_fns), hashes) if results_path is not None else None
    rows: list[dict[str, Any]] = list(results.rows) if results else []
    done = {(r["component"], r["item"]) for r in rows}

    def emit(new_rows: list[dict[str, Any]]) -> None:
        for r in new_rows:
            if results is not None:
                r["item_hash"] = hashes[r["item"]]
        rows.extend(new_rows)
        if results is not None:
            results.append(new_rows)

    todo = [(it, [c for c in comps if (c.name, it.id) not in done]) for it in items]
    n_chunks = sum(len(spec.chunks(cs)) for _, cs in todo)
    bar = tqdm(total=n_chunks, desc="patching sweep", disable=not progress, unit="batch")
    t0, n_runs = time.perf_counter(), 0
    try:
        for item, pending in todo:
            if pending:
                n_runs += _sweep_item(model, item, pending, spec, emit, bar)
    finally:
        bar.close()
        if results is not None:
            results.close()
    # only what was asked for: the file may hold other components and items of the same sweep
    wanted = {(c, it.id) for c in names for it in items}
    rows = [r for r in rows if (r["component"], r["item"]) in wanted]
    # rows in sweep order (items, then components as given), however the runs were grouped
    item_pos, comp_pos = {it.id: i for i, it in enumerate(items)}, {n: i for i, n in enumerate(names)}
    far = len(items) + len(names)
    rows.sort(key=lambda r: (item_pos.get(r["item"], far), comp_pos.get(r["component"], far)))
    texts: dict[str, dict[str, str]] = {}
    clean_texts: dict[str, str] = {}
    for r in rows:
        if r["metric"] == TRANSCRIPT:
            texts.setdefault(r["item"], {})[r["component"]] = r["text"]
            clean_texts[r["item"]] = r["clean_text"]
    rows = [r for r in rows if r["metric"] != TRANSCRIPT]
    table = pd.DataFrame(
        rows, columns=["component", "item", "metric", "value", "clean", "stack", "layer", "kind", "head"]
    )
    return SweepResult(table, time.perf_counter() - t0, n_runs, config, texts, clean_texts)


def _fingerprint(
    model: Any,
    spec: _SweepSpec,
    intervention: Any,
    reference: str | None,
    positions: Sequence[int] | None,
    means: Mapping[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """Everything that decides a sweep's rows, as stored in its results file's header (what only
    changes speed, such as ``batch_size`` or ``share_encoder``, is left out)."""
    gen_kwargs, stops = generation_settings(model)
    return jsonable(
        {
            "intervention": intervention
            if isinstance(intervention, str)
            else getattr(intervention, "__name__", "custom"),
            "alpha": spec.alpha,
            "mode": spec.mode,
            "metrics": sorted(spec.metric_fns),
            "reference": reference,
            "reference_seed": spec.reference_seed,
            "missing": spec.missing,
            "model": model_identity(model),
            "generation": {**gen_kwargs, "stop_token_ids": stops},
            "positions": None if positions is None else [int(p) for p in positions],
            "max_new_tokens": spec.max_new_tokens,
            "patched_max_new_tokens": spec.patched_max_new_tokens,
            "teacher_forced_kwargs": spec.tf_kwargs,
            "means": tensors_hash(means),
        }
    )


def _item_hash(item: SweepItem) -> str:
    """Content hash of what an item's rows depend on: its audio, reference, text and extra fields."""
    return data_hash([data_hash(item.audio), data_hash(item.reference), item.text, jsonable(item.extra)])


# The metric keep_transcripts adds: its rows carry the texts and leave the table for result.transcripts.
TRANSCRIPT = "transcript"


def _patched_text(ctx: MetricContext) -> str:
    return ctx.patched.as_text


def _row(c: Component, item: SweepItem, metric: str, value: float | str, clean: float | str) -> dict[str, Any]:
    row = {
        "component": c.name,
        "item": item.id,
        "metric": metric,
        "stack": c.stack,
        "layer": c.layer,
        "kind": c.kind,
        "head": c.head,
    }
    if metric == TRANSCRIPT:
        return {**row, "value": None, "clean": None, "text": str(value), "clean_text": str(clean)}
    return {**row, "value": float(value), "clean": float(clean)}


__all__ = ["LOGIT_METRICS", "SweepItem", "SweepResult", "patched_values", "sweep"]
