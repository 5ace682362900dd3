"""What the explorer shows, computed once in Python and packed small for the page.

Everything is computed at full resolution through the public model API and hook names; only
what is *drawn* is downsampled: the waveform to min/max per pixel column, the log-mel to at most
``MAX_MEL_COLUMNS`` columns, attention over audio sum-pooled into at most ``max_audio_columns``
bins (each bin holds the attention mass of its frames, so a pooled row still sums to what the
frames did). Arrays travel as base64 ``uint8``; an attention row is scaled by its own maximum
(kept as a float, so the page can still show the mass).

Query convention: the attention "of token s" is the attention of the query position whose
output predicts token s (``prompt_len - 1 + s``), the same position the logit lens reads.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, UInt8

from hooked_asr.models.decoding import alignment_heads

from hooked_asr.audio import (
    ENCODER_FRAME_SECONDS,
    HOP_LENGTH,
    SAMPLE_RATE,
    SAMPLES_PER_ENCODER_FRAME,
    audio_frames,
    window_samples,
)

MAX_MEL_COLUMNS = 1500  # 20 ms per column for a 30-s clip
WAVE_COLUMNS = 2000  # min/max pairs drawn for the waveform
QWEN_POOL = 2  # Qwen2-Audio average-pools encoder frames by 2 before the projector: 40 ms per audio token


# ---- packing ------------------------------------------------------------------------------
def b64_uint8(x: UInt8[np.ndarray, "..."]) -> str:
    """``uint8`` array, C order, as base64 (the page reads it back with ``atob``)."""
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).decode("ascii")


def to_uint8(x: Float[np.ndarray, "..."], lo: float | None = None, hi: float | None = None) -> UInt8[np.ndarray, "..."]:
    """Map ``[lo, hi]`` (default: the data's range) linearly to ``0..255``."""
    lo = float(np.min(x)) if lo is None else lo
    hi = float(np.max(x)) if hi is None else hi
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.rint((x - lo) * scale), 0, 255).astype(np.uint8)


def pool_columns(x: Float[np.ndarray, "... n"], n_out: int, reduce: str = "sum") -> Float[np.ndarray, "... n_out"]:
    """Pool the last axis of ``x`` into ``n_out`` near-equal bins (``sum`` keeps attention mass,
    ``mean`` keeps a spectrogram's level)."""
    n = x.shape[-1]
    if n_out >= n:
        return x
    edges = np.linspace(0, n, n_out + 1).round().astype(int)
    summed = np.add.reduceat(x, edges[:-1], axis=-1)
    return summed if reduce == "sum" else summed / np.diff(edges)


def _rows_scaled(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row (last axis) scaled to its maximum -> ``(uint8 rows, row maxima)``."""
    peak = x.max(-1, keepdims=True)
    scaled = np.where(peak > 0, x / np.where(peak > 0, peak, 1), 0)
    return to_uint8(scaled, 0.0, 1.0), peak[..., 0]


# ---- audio ---------------------------------------------------------------------------------
def audio_section(audio: Float[np.ndarray, "samples"]) -> dict[str, Any]:
    """Duration and the waveform as min/max per drawn column (int8 shifted to uint8)."""
    from hooked_asr.sae.features import wav_base64

    n = len(audio)
    cols = max(1, min(WAVE_COLUMNS, n))
    edges = np.linspace(0, n, cols + 1).round().astype(int)
    lo = np.minimum.reduceat(audio, edges[:-1]) if n else np.zeros(1)
    hi = np.maximum.reduceat(audio, edges[:-1]) if n else np.zeros(1)
    peak = float(max(np.abs(audio).max() if n else 0.0, 1e-6))
    return {
        "sample_rate": SAMPLE_RATE,
        "duration": n / SAMPLE_RATE,
        "peak": peak,
        "wave_min": b64_uint8(to_uint8(lo / peak, -1, 1)),
        "wave_max": b64_uint8(to_uint8(hi / peak, -1, 1)),
        "wave_columns": cols,
        "wav_base64": wav_base64(audio),
    }


def mel_section(model: Any, audio: Float[np.ndarray, "samples"]) -> dict[str, Any]:
    """The model's own log-mel input over the clip (not the padding), mean-pooled to at most
    ``MAX_MEL_COLUMNS`` columns. Row 0 is the lowest mel bin."""
    feats = model.prepare_features(audio)["input_features"][0].float().cpu().numpy()  # [n_mels, frames]
    n_frames = min(feats.shape[-1], max(1, math.ceil(len(audio) / HOP_LENGTH)))
    mel = pool_columns(feats[:, :n_frames], MAX_MEL_COLUMNS, reduce="mean")
    return {
        "n_mels": int(mel.shape[0]),
        "columns": int(mel.shape[1]),
        "frames": n_frames,
        "seconds": n_frames * HOP_LENGTH / SAMPLE_RATE,
        "data": b64_uint8(to_uint8(mel)),
        "range": [float(mel.min()), float(mel.max())],
    }


# ---- transcript and words -------------------------------------------------------------------
def token_strings(model: Any, ids: Sequence[int]) -> list[str]:
    from hooked_asr.lens import token_string

    memo: dict[int, str] = {}
    for t in ids:
        if t not in memo:
            memo[t] = token_string(model, int(t))
    return [memo[int(t)] for t in ids]


def has_cross_attention(model: Any) -> bool:
    return "decoder.blocks.0.cross_attn.hook_pattern" in model.hook_dict


def word_timings(model: Any, result: Any) -> list[dict[str, Any]]:
    """Words with start/end (s), probability and the indices of their tokens in ``result.tokens``,
    from ``result.words`` (``model.transcribe(audio, word_timestamps=True)``: DTW over the
    alignment heads' cross-attention); models without cross-attention (Qwen2-Audio) have none."""
    if not result.words:
        return []
    out, pos = [], 0
    for w in result.words:
        ids = [int(t) for t in w.tokens]
        at = next(
            (i for i in range(pos, len(result.tokens) - len(ids) + 1) if list(result.tokens[i : i + len(ids)]) == ids),
            None,
        )
        if at is None:
            raise RuntimeError(f"word {w.word!r}: its tokens {ids} are not in the transcript after token {pos}")
        pos = at + len(ids)
        out.append(
            {
                "word": w.word.strip(),
                "start": round(float(w.start), 3),
                "end": round(float(w.end), 3),
                "tokens": list(range(at, pos)),
                "probability": round(float(w.probability), 4),
            }
        )
    return out


def transcript_section(result: Any, lens: Any, words: list[dict[str, Any]], reference: str | None) -> dict[str, Any]:
    """The transcript's tokens (the lens's steps: the transcript, then end of text) with their
    log-probs and words, the text, and what was said when known."""
    word_of = {i: w for w, wd in enumerate(words) for i in wd["tokens"]}
    n = len(result.tokens)
    lps = list(result.token_logprobs) + [None] * (lens.n_steps - n)
    tokens = [
        {
            "id": int(t),
            "text": s,
            "logprob": None if lp is None else round(float(lp), 4),
            "special": i >= n,
            "word": word_of.get(i),
        }
        for i, (t, s, lp) in enumerate(zip(lens.tokens.tolist(), lens.token_strs, lps))
    ]
    return {
        "text": result.text,
        "reference": reference,
        "language": result.language,
        "avg_logprob": round(float(result.avg_logprob), 4),
        "tokens": tokens,
        "words": words,
    }


def downsampling_note(audio: dict[str, Any], mel: dict[str, Any], attention: dict[str, Any]) -> str:
    """What the page draws at lower resolution than was computed (the page shows this line)."""
    return (
        f"Computed at full resolution; drawn downsampled: waveform min/max in {audio['wave_columns']} columns, "
        f"log-mel mean-pooled from {mel['frames']} frames to {mel['columns']} columns, attention over the audio "
        f"sum-pooled from {attention['frames']} positions to {attention['columns']} bins, each row scaled to its maximum."
    )


# ---- attention ----------------------------------------------------------------------------
@torch.no_grad()
def attention_sections(
    model: Any,
    audio: Float[np.ndarray, "samples"],
    tokens: Sequence[int],
    language: str | None,
    n_steps: int,
    max_audio_columns: int = 400,
    budget_bytes: int = 1_200_000,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(audio attention, self-attention)`` of every decoder layer and head for each step.

    One teacher-forced forward over ``prompt + tokens`` (``run_with_cache`` on the patterns).
    Whisper: ``decoder.blocks.{l}.cross_attn.hook_pattern`` over the encoder frames of the clip.
    Qwen2-Audio (no cross-attention): ``decoder.blocks.{l}.attn.hook_pattern`` over the
    ``<|AUDIO|>`` positions of the prompt. Self-attention: the same query over the text
    positions before it. ``budget_bytes`` caps the audio attention's drawn size (fewer columns
    for bigger models or longer transcripts: whisper base's 48 heads over a 30-s transcript get
    ~250 bins of 120 ms) and the self-attention's (mean over heads when every head would not
    fit), so that with the 30-s WAV (1.3 MB as base64) a page stays under ~5 MB.
    """
    kw = {"language": language} if language is not None else {}
    tf = model.teacher_forced_inputs(audio, continuation=list(tokens), **kw)
    _, cache = model.run_with_cache(**tf.kwargs, names_filter=pattern_names(model))
    return attention_sections_of_cache(model, cache, tf, len(audio), n_steps, max_audio_columns, budget_bytes)


def pattern_names(model: Any) -> list[str]:
    """Every decoder layer's ``attn.hook_pattern``, then (Whisper) its ``cross_attn.hook_pattern``."""
    n_layers = model.cfg.decoder.n_layers
    out = [f"decoder.blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    return out + (
        [f"decoder.blocks.{l}.cross_attn.hook_pattern" for l in range(n_layers)] if has_cross_attention(model) else []
    )


def attention_sections_of_cache(
    model: Any,
    cache: Mapping[str, torch.Tensor],
    tf: Any,
    n_samples: int,
    n_steps: int,
    max_audio_columns: int = 400,
    budget_bytes: int = 1_200_000,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`attention_sections` of a teacher-forced run already recorded: ``cache`` holds
    :func:`pattern_names` of ``model(**tf.kwargs)`` (hooks may have been live), ``n_samples`` the clip's length."""
    n_layers, n_heads = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
    cross = has_cross_attention(model)
    self_names = [f"decoder.blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    cross_names = [f"decoder.blocks.{l}.cross_attn.hook_pattern" for l in range(n_layers)] if cross else []
    p = tf.prompt_len
    queries = torch.arange(p - 1, p - 1 + n_steps)
    ids = tf.tokens[0].cpu()
    if cross:
        n_cols_full = audio_frames(n_samples, model.cfg.encoder.n_ctx, window_samples(model))
        audio_att = torch.stack([cache[n][0][:, queries, :n_cols_full] for n in cross_names])  # [L, H, S, F]
        col_seconds, kind = ENCODER_FRAME_SECONDS, "cross"
        text_keys = torch.arange(0, int(queries[-1]) + 1)
    else:
        audio_pos = torch.nonzero(ids == int(model.audio_token_id))[:, 0]
        pats = torch.stack([cache[n][0][:, queries] for n in self_names])  # [L, H, S, T]
        audio_att = pats[..., audio_pos]
        n_cols_full = len(audio_pos)
        col_seconds, kind = ENCODER_FRAME_SECONDS * QWEN_POOL, "audio_prefix"
        text_keys = torch.tensor([k for k in range(int(queries[-1]) + 1) if int(ids[k]) != int(model.audio_token_id)])
    heads = alignment_heads(model)  # the config's, else every head of the decoder's upper half
    att = audio_att.permute(2, 0, 1, 3).float().cpu().numpy()  # [S, L, H, F]
    align_mean = att[:, [l for l, _ in heads], [h for _, h in heads]].mean(1)  # [S, F]
    rows = n_steps * (n_layers * n_heads + 1)
    n_cols = int(min(n_cols_full, max_audio_columns, max(32, budget_bytes // max(rows, 1))))
    pooled = pool_columns(att, n_cols)
    pooled_mean = pool_columns(align_mean, n_cols)
    q_att, peak = _rows_scaled(pooled)
    q_mean, peak_mean = _rows_scaled(pooled_mean)
    audio_sec = {
        "kind": kind,
        "hook": "cross_attn.hook_pattern" if cross else "attn.hook_pattern",
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_steps": n_steps,
        "columns": n_cols,
        "frames": int(n_cols_full),
        "seconds": n_cols_full * col_seconds,
        "frame_seconds": col_seconds,
        "data": b64_uint8(q_att),
        "row_max": np.round(peak, 5).tolist(),
        "mean_heads": [list(h) for h in heads],
        "mean_data": b64_uint8(q_mean),
        "mean_row_max": np.round(peak_mean, 5).tolist(),
    }
    selfp = torch.stack([cache[n][0][:, queries][..., text_keys] for n in self_names])  # [L, H, S, K]
    selfp = selfp.permute(2, 0, 1, 3).float().cpu().numpy()
    per_head = selfp.size <= budget_bytes
    if not per_head:
        selfp = selfp.mean(2, keepdims=True)
    self_sec = {
        "per_head": per_head,
        "keys": token_strings(model, ids[text_keys].tolist()),
        "key_positions": text_keys.tolist(),
        "query_positions": queries.tolist(),
        "data": b64_uint8(to_uint8(selfp, 0.0, 1.0)),
        "shape": list(selfp.shape),
    }
    return audio_sec, self_sec


# ---- lenses -------------------------------------------------------------------------------
def logit_lens_section(lens: Any) -> dict[str, Any]:
    """Top-k per layer and step, p(final token), its rank, the saturation layer (per step)."""
    return {
        "layers": list(range(lens.n_layers)),
        "topk_strs": lens.topk_strs,
        "topk_ids": lens.topk_ids.tolist(),
        "topk_probs": np.round(lens.topk_probs.float().numpy(), 4).tolist(),
        "chosen_prob": np.round(lens.chosen_prob.float().numpy(), 4).tolist(),
        "chosen_rank": lens.chosen_rank.tolist(),
        "saturation": lens.saturation.tolist(),
    }


def encoder_lens_section(enc: Any) -> list[dict[str, Any]]:
    return [
        {
            "layer": r.layer,
            "text": r.text if r.text is not None else " ".join(map(str, r.tokens)),
            "empty": r.empty,
            "loop": r.repetition_loop,
            "prefix": r.matches_final_prefix,
            "wer": None if r.wer is None else round(float(r.wer), 3),
        }
        for r in enc.layers
    ]


# ---- optional panels ----------------------------------------------------------------------
def patching_section(
    result: Any, metric: str | None = None, transcripts: Mapping[str, str] | None = None, relative_to_clean: bool = True
) -> dict[str, Any]:
    """Layer x head heatmaps of a :func:`hooked_asr.patching.sweep` result (one per stack and kind),
    with the patched transcript of each head when ``transcripts`` (component -> text) is given."""
    t = result.table
    t = t[t["head"].notna()]
    if t.empty:
        raise ValueError("the sweep has no head-level rows: sweep components(model, heads=True) to see a heatmap")
    metric = metric or str(t["metric"].iloc[0])
    t = t[t["metric"] == metric]
    if t.empty:
        raise ValueError(f"the sweep has no metric {metric!r}; it has {sorted(result.table['metric'].unique())}")
    clean = float(t["clean"].iloc[0])
    maps = []
    for (stack, kind), g in t.groupby(["stack", "kind"], sort=False):
        values, layers = result.heatmap(metric, stack, kind)
        if relative_to_clean:
            values = values - clean
        names = {(int(r.layer), int(r.head)): r.component for r in g.itertuples()}
        comps = [[names.get((l, h), "") for h in range(values.shape[1])] for l in layers]
        maps.append(
            {
                "stack": stack,
                "kind": kind,
                "layers": layers,
                "values": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in values],
                "components": comps,
            }
        )
    return {
        "metric": metric,
        "clean": clean,
        "relative": relative_to_clean,
        "maps": maps,
        "transcripts": dict(transcripts or {}),
        "config": {k: str(v) for k, v in result.config.items()},
    }


def probe_section(probe: Any, title: str | None = None) -> dict[str, Any]:
    """Per-layer scores of a :class:`hooked_asr.probing.ProbeSweep` (or its ``rows``)."""
    rows = probe.rows if hasattr(probe, "rows") else list(probe)
    if not rows:
        raise ValueError("the probe sweep has no rows")
    keys = [k for k in ("test_acc", "train_acc", "f1", "chance", "test_r2", "train_r2") if k in rows[0]]
    return {
        "title": title or getattr(probe, "title", "") or "probe",
        "layers": [str(r.get("layer", r.get("key"))) for r in rows],
        "metrics": {
            k: [
                None if r[k] is None or (isinstance(r[k], float) and math.isnan(r[k])) else round(float(r[k]), 4)
                for r in rows
            ]
            for k in keys
        },
    }


@torch.no_grad()
def sae_section(
    model: Any,
    sae: Any,
    audio: Float[np.ndarray, "samples"],
    clips: Sequence[np.ndarray] | None = None,
    features: Sequence[int] | None = None,
    n_features: int = 8,
    top_k: int = 6,
    snippet_seconds: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """An SAE's features: per feature its activation over this clip (aligned with the
    spectrogram), top-activating frames over ``clips`` (default: this clip) with the words spoken
    there and their audio, and the histogram of log10 activations. Statistics and labels come
    from :mod:`hooked_asr.sae.features`."""
    from hooked_asr.sae.features import collect_feature_stats, feature_reports, wav_base64
    from hooked_asr.sae.frames import ModelFrameSource

    clips = [audio] if clips is None else list(clips)
    main = next((i for i, c in enumerate(clips) if c is audio), None)
    source = ModelFrameSource(model, [audio], sae.cfg.hook_name, batch_size=1, pad_frames=0)
    trace = sae.encode(source.chunk_with_meta(0)[0]).float()  # [frames, d_sae]
    if features is None:
        features = trace.max(0).values.topk(min(n_features, trace.shape[1])).indices.tolist()
    features = [int(f) for f in features]
    stats = collect_feature_stats(model, sae, clips, top_k=top_k, progress=progress)
    reports = feature_reports(model, stats, clips, features, progress=progress)
    half = int(snippet_seconds / 2 / ENCODER_FRAME_SECONDS)
    out = []
    for r in reports:
        col = trace[:, r.feature].numpy()
        examples = []
        for e in r.examples:
            lo, hi = max(0, e.frame - half), e.frame + half
            ex = {
                "value": round(e.value, 4),
                "clip": e.clip,
                "time": round(e.time, 3),
                "word": e.word,
                "context": e.context,
                "in_padding": e.in_padding,
                "start": lo * ENCODER_FRAME_SECONDS,
                "end": hi * ENCODER_FRAME_SECONDS,
            }
            if e.clip != main:  # another clip's audio travels as its own short WAV
                snippet = clips[e.clip][lo * SAMPLES_PER_ENCODER_FRAME : hi * SAMPLES_PER_ENCODER_FRAME]
                ex["wav_base64"] = wav_base64(snippet) if len(snippet) else None
            examples.append(ex)
        out.append(
            {
                "feature": r.feature,
                "label": r.label,
                "frequency": r.frequency,
                "max_act": r.max_act,
                "hist": stats.hist[r.feature].tolist(),
                "bin_edges": np.round(stats.bin_edges.numpy(), 3).tolist(),
                "trace": b64_uint8(to_uint8(col, 0.0, max(float(col.max()), 1e-6))),
                "trace_max": float(col.max()),
                "examples": examples,
            }
        )
    return {
        "hook": sae.cfg.hook_name,
        "d_sae": int(sae.d_sae),
        "n_clips": len(clips),
        "frame_seconds": ENCODER_FRAME_SECONDS,
        "trace_frames": int(trace.shape[0]),
        "features": out,
    }


__all__ = [
    "attention_sections",
    "attention_sections_of_cache",
    "pattern_names",
    "audio_section",
    "b64_uint8",
    "downsampling_note",
    "encoder_lens_section",
    "transcript_section",
    "logit_lens_section",
    "mel_section",
    "patching_section",
    "pool_columns",
    "probe_section",
    "to_uint8",
    "sae_section",
    "word_timings",
]
