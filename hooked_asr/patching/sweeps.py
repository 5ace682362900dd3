"""Sweeps: one intervention over many components and a dataset, as a tidy table.

For each item: the clean transcript is generated once, the reference run is recorded
once (teacher-forced on the clean transcript's tokens, so decoder positions line up),
then the components are run in chunks of ``batch_size``: the input is repeated
``batch_size`` times and row ``j`` gets the intervention on component ``j``, so one
batched forward (or one batched greedy decode) replaces ``batch_size`` separate ones.
When every component of a chunk is in the decoder, the encoder output is computed once
and shared by all rows.

The table has one row per (component, item, metric) with the patched ``value`` and the
``clean`` value; rows are appended to ``results_path`` (JSON lines) as they are made, and
a rerun with the same path skips what is already there.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hooked_asr.patching.components import Component, parse_component
from hooked_asr.patching.interventions import (
    Intervention,
    MissingPolicy,
    interpolate,
    mean_ablate,
    patched,
    position_kind,
    record_reference,
    zero_ablate,
)
from hooked_asr.patching.metrics import (
    MetricContext,
    Transcript,
    continuation_logprob,
    logit_difference,
    resolve_transcript_metrics,
)
from hooked_asr.patching.references import make_reference

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
        raise KeyError(f"metric 'logit_diff' needs item.extra['logit_diff'] = (position, token_a, token_b) (item {item.id})")
    pos, a, b = item.extra["logit_diff"]
    return logit_difference(logits, pos, a, b)


LOGIT_METRICS: dict[str, LogitMetric] = {"logprob": _logprob_metric, "logit_diff": _logit_diff_metric}


@dataclass
class SweepResult:
    """``table``: tidy rows (component, item, metric, value, clean, stack, layer, kind, head)."""

    table: Any  # pandas.DataFrame
    seconds: float = 0.0
    n_batched_runs: int = 0
    config: dict[str, Any] = field(default_factory=dict)

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


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def generation_settings(model: Any) -> tuple[dict[str, Any], list[int]]:
    """``(extra generate kwargs, stop ids)`` matching what ``model.transcribe`` does.

    Read from public attributes: ``stop_token_ids()`` (a model with several end tokens,
    e.g. Qwen2-Audio) and ``audio_token_id`` (a placeholder that must never be generated).
    """
    stops = [model.cfg.eos_token_id]
    kwargs: dict[str, Any] = {}
    if callable(getattr(model, "stop_token_ids", None)):
        stops = list(model.stop_token_ids()) or stops
        kwargs["eos_token_id"] = stops[0]
    audio_id = getattr(model, "audio_token_id", None)
    if isinstance(audio_id, int):
        kwargs["suppress_tokens"] = [audio_id]
        kwargs["begin_suppress_tokens"] = [audio_id]
    return kwargs, stops


class _Runner:
    """The model-agnostic calls a sweep needs, for one item."""

    def __init__(self, model: Any, item: SweepItem, tf_kwargs: Mapping[str, Any], max_new_tokens: int | None):
        self.model, self.item = model, item
        self.features = model.prepare_features(item.audio)
        tf = model.teacher_forced_inputs(item.audio, **tf_kwargs)
        self.prompt = tf.tokens[0, : tf.prompt_len]
        self.tf_kwargs = dict(tf_kwargs)
        self.gen_kwargs, self.stops = generation_settings(model)
        self.max_new_tokens = max_new_tokens
        self._encoded: torch.Tensor | None = None

    def _batch(self, n: int) -> dict[str, Any]:
        return {k: (v.expand(n, *v.shape[1:]) if isinstance(v, torch.Tensor) else v) for k, v in self.features.items()}

    def encoded(self) -> torch.Tensor:
        # What the decoder reads, through the model-agnostic API (Whisper: encoder.hook_out;
        # Qwen2-Audio: the projector's output), computed once and shared by every row.
        if self._encoded is None:
            with torch.no_grad():
                resid = self.model.encode(**self.features, stop_at_layer=self.model.n_layers["encoder"])
                self._encoded = self.model.finish_encoder(resid, **self.features)
        return self._encoded

    def transcripts(self, out: Any) -> list[Transcript]:
        res = []
        for row in range(out.tokens.shape[0]):
            toks = out.tokens[row].tolist()
            cut = next((j for j, t in enumerate(toks) if t in self.stops), None)
            if cut is not None:
                toks = toks[:cut]
            tok = getattr(self.model, "tokenizer", None)
            text = tok.decode(toks).strip() if tok is not None else None
            res.append(Transcript(toks, text, bool(out.finished[row])))
        return res

    def generate(self, n: int, share_encoder: bool, max_new_tokens: int | None) -> list[Transcript]:
        kwargs: dict[str, Any] = dict(self._batch(n), prompt_ids=self.prompt, max_new_tokens=max_new_tokens,
                                      **self.gen_kwargs)
        if share_encoder:
            enc = self.encoded()
            kwargs["encoder_hidden_states"] = enc.expand(n, *enc.shape[1:])
        return self.transcripts(self.model.generate(**kwargs))

    def teacher_forced(self, continuation: Sequence[int], n: int, share_encoder: bool) -> tuple[torch.Tensor, Any]:
        tf = self.model.teacher_forced_inputs(self.item.audio, continuation, **self.tf_kwargs)
        kwargs = {k: (v.expand(n, *v.shape[1:]) if isinstance(v, torch.Tensor) else v) for k, v in tf.kwargs.items()}
        if share_encoder:
            enc = self.encoded()
            # the mel goes; any mask stays (Qwen2-Audio counts audio tokens from it)
            kwargs = {k: v for k, v in kwargs.items() if k != "input_features"}
            kwargs["encoder_hidden_states"] = enc.expand(n, *enc.shape[1:])
        with torch.no_grad():
            return self.model(**kwargs), tf


def _decoder_only(model: Any, comps: Sequence[Component]) -> bool:
    return all(c.hook_name.startswith("decoder.") for c in comps)


def _make_intervention(
    kind: str | Callable, comp: Component, row: int, alpha: float, ref_cache: Mapping | None,
    means: Mapping | None, missing: MissingPolicy, positions: Sequence[int] | None,
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


def _load_results(path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if lines and "config" in lines[0]:
        old = lines[0]["config"]
        if old != config:
            diff = {k: (old.get(k), config.get(k)) for k in set(old) | set(config) if old.get(k) != config.get(k)}
            raise ValueError(
                f"{path} holds results of a different sweep (differs in {diff}); use another results_path or delete it"
            )
        lines = lines[1:]
    rows.extend(lines)
    return rows


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
    max_new_tokens: int | None = None,
    patched_max_new_tokens: int | None = None,
    share_encoder: bool = True,
    results_path: str | Path | None = None,
    progress: bool = True,
    teacher_forced_kwargs: Mapping[str, Any] | None = None,
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
    ``batch_size=1`` runs the components one at a time.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    items = list(items)
    comps = [parse_component(model, c) for c in comps]
    if not comps:
        raise ValueError("no components to sweep; list them with hooked_asr.patching.components(model)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise ValueError("components repeat in the list; each (component, item) pair is one row")
    for c in comps:
        position_kind(c.hook_name)  # fail early on unsupported hooks
    if mode == "generate":
        metric_fns: dict[str, Any] = resolve_transcript_metrics(metrics)
    elif mode == "teacher_forced":
        pairs = metrics.items() if isinstance(metrics, Mapping) else [
            (m if isinstance(m, str) else getattr(m, "__name__", f"metric{i}"), m) for i, m in enumerate(metrics)]
        metric_fns = {}
        for name, fn in pairs:
            if isinstance(fn, str):
                if fn not in LOGIT_METRICS:
                    raise KeyError(f"unknown teacher-forced metric {fn!r}; built-in: {sorted(LOGIT_METRICS)}")
                fn = LOGIT_METRICS[fn]
            metric_fns[name] = fn
    else:
        raise ValueError(f"mode must be 'generate' or 'teacher_forced', got {mode!r}")
    needs_ref = intervention in ("interpolate", "patch") or callable(intervention)

    config = {
        "intervention": intervention if isinstance(intervention, str) else getattr(intervention, "__name__", "custom"),
        "alpha": alpha, "mode": mode, "metrics": sorted(metric_fns), "reference": reference,
        "reference_seed": reference_seed, "missing": missing,
    }
    path = Path(results_path) if results_path is not None else None
    rows: list[dict[str, Any]] = _load_results(path, config) if path else []
    done = {(r["component"], r["item"]) for r in rows}
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": config}) + "\n")

    tf_kwargs = dict(teacher_forced_kwargs or {})
    can_share_gen = share_encoder and _accepts(getattr(model, "_generation_context", lambda: None), "encoder_hidden_states")
    can_share_tf = share_encoder and _accepts(model.forward, "encoder_hidden_states")
    todo = [(it, [c for c in comps if (c.name, it.id) not in done]) for it in items]
    n_chunks = sum(-(-len(cs) // batch_size) for _, cs in todo)
    bar = tqdm(total=n_chunks, desc="patching sweep", disable=not progress, unit="batch")
    t0, n_runs = time.perf_counter(), 0
    try:
        for item, pending in todo:
            if not pending:
                continue
            run = _Runner(model, item, tf_kwargs, max_new_tokens)
            clean = run.generate(1, False, max_new_tokens)[0]
            ref_cache = None
            if needs_ref:
                ref_input = item.reference
                if ref_input is None:
                    if reference is None:
                        raise ValueError(
                            f"item {item.id!r} has no reference input: set item.reference or pass reference='noise'"
                        )
                    ref_input = make_reference(reference, item.audio, seed=reference_seed)
                ref_tf = model.teacher_forced_inputs(ref_input, clean.tokens, **tf_kwargs)
                ref_cache = record_reference(model, ref_tf.kwargs, pending)
            if mode == "generate":
                base = MetricContext(item, clean, clean)
                clean_values = {k: float(fn(base)) for k, fn in metric_fns.items()}
            else:
                logits, tf = run.teacher_forced(clean.tokens, 1, False)
                clean_values = {k: float(fn(logits, tf, item)[0]) for k, fn in metric_fns.items()}
            cap = patched_max_new_tokens or (2 * len(clean.tokens) + 16)
            if max_new_tokens is not None:
                cap = min(cap, max_new_tokens)
            for s in range(0, len(pending), batch_size):
                chunk = pending[s : s + batch_size]
                n = len(chunk)
                ivs = [_make_intervention(intervention, c, j, alpha, ref_cache, means, missing, positions)
                       for j, c in enumerate(chunk)]
                dec_only = _decoder_only(model, chunk)
                new_rows = []
                with patched(model, ivs) as tracker:
                    tracker.reset()
                    if mode == "generate":
                        outs = run.generate(n, can_share_gen and dec_only, cap)
                        for c, out in zip(chunk, outs):
                            ctx = MetricContext(item, clean, out)
                            for name, fn in metric_fns.items():
                                new_rows.append(_row(c, item, name, fn(ctx), clean_values[name]))
                    else:
                        logits, tf = run.teacher_forced(clean.tokens, n, can_share_tf and dec_only)
                        for name, fn in metric_fns.items():
                            vals = fn(logits, tf, item)
                            for j, c in enumerate(chunk):
                                new_rows.append(_row(c, item, name, float(vals[j]), clean_values[name]))
                n_runs += 1
                rows.extend(new_rows)
                if path is not None:
                    with open(path, "a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in new_rows)
                bar.update(1)
    finally:
        bar.close()
    table = pd.DataFrame(rows, columns=["component", "item", "metric", "value", "clean", "stack", "layer", "kind", "head"])
    return SweepResult(table, time.perf_counter() - t0, n_runs, config)


def _row(c: Component, item: SweepItem, metric: str, value: float, clean: float) -> dict[str, Any]:
    return {"component": c.name, "item": item.id, "metric": metric, "value": float(value), "clean": float(clean),
            "stack": c.stack, "layer": c.layer, "kind": c.kind, "head": c.head}


__all__ = ["LOGIT_METRICS", "SweepItem", "SweepResult", "sweep"]
