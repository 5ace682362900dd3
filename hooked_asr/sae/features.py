"""What SAE features respond to: top-activating frames, the words spoken there, histograms,
automatic labels, and a self-contained HTML feature browser.

One Whisper encoder frame is 20 ms: frame ``t`` covers ``[0.02 t, 0.02 (t + 1))`` seconds.
Words get times from the decoding core's word timings
(:func:`hooked_asr.models.decoding.find_alignment`: DTW over the alignment heads'
cross-attention, as openai-whisper's ``timing.py``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import wave
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hooked_asr.audio import ENCODER_FRAME_SECONDS, SAMPLE_RATE, SAMPLES_PER_ENCODER_FRAME, audio_frames, window_samples
from hooked_asr.models.decoding import dtw as dtw_path
from hooked_asr.models.decoding import find_alignment
from hooked_asr.sae.frames import ModelFrameSource
from hooked_asr.sae.model import SparseAutoencoder


# ---- alignment ---------------------------------------------------------------------------
@dataclass
class Word:
    text: str
    start: float  # seconds
    end: float


@torch.no_grad()
def align_words(
    model: Any,
    audio: np.ndarray,
    tokens: Sequence[int] | None = None,
    language: str | None = None,
    medfilt_width: int = 7,
) -> list[Word]:
    """Words of the transcript (``tokens``, or the model's own transcript) with start/end times:
    :func:`hooked_asr.models.decoding.find_alignment` (the decoding core's word timings)."""
    if tokens is None:
        out = model.transcribe(audio, language=language)
        tokens, language = out.tokens, out.language or language
    eot = model.cfg.eos_token_id
    tokens = [int(t) for t in tokens if t < eot][: model.cfg.decoder.n_ctx // 2]
    if not tokens:
        return []
    feats = model.prepare_features(audio)
    n_frames = audio_frames(len(audio), model.cfg.encoder.n_ctx, window_samples(model))
    timings = find_alignment(
        model,
        tokens,
        input_features=feats["input_features"],
        num_frames=2 * n_frames,
        language=language,
        medfilt_width=medfilt_width,
    )
    return [
        Word(t.word.strip(), t.start, max(t.end, t.start + ENCODER_FRAME_SECONDS)) for t in timings if t.word.strip()
    ]


def word_at(words: Sequence[Word], t: float, tolerance: float = 0.06) -> str:
    """The word spoken at time ``t`` (or within ``tolerance`` of it), else ``""``."""
    for wd in words:
        if wd.start <= t < wd.end:
            return wd.text
    near = [(min(abs(t - wd.start), abs(t - wd.end)), wd.text) for wd in words]
    near = [n for n in near if n[0] <= tolerance]
    return min(near)[1] if near else ""


# ---- statistics --------------------------------------------------------------------------
@dataclass
class FeatureStats:
    """Per-feature statistics over a set of clips (one top example per clip per feature)."""

    n_frames: int
    frequency: torch.Tensor  # [d_sae] fraction of frames where the feature fires
    max_act: torch.Tensor  # [d_sae]
    hist: torch.Tensor  # [d_sae, n_bins] counts of log10(activation) over firing frames
    bin_edges: torch.Tensor  # [n_bins + 1] in log10 units
    top_values: torch.Tensor  # [d_sae, top_k]
    top_clip: torch.Tensor  # [d_sae, top_k] clip index (-1 where fewer examples)
    top_frame: torch.Tensor  # [d_sae, top_k] frame within the clip
    clip_speech_frames: list[int] = field(default_factory=list)


@torch.no_grad()
def collect_feature_stats(
    model: Any,
    sae: SparseAutoencoder,
    audios: Sequence[np.ndarray],
    top_k: int = 8,
    batch_size: int = 4,
    pad_frames: int = 8,
    n_bins: int = 50,
    log10_range: tuple[float, float] = (-3.0, 2.0),
    progress: bool = True,
) -> FeatureStats:
    """Stream the clips through the model and the SAE, keeping per feature its firing rate,
    a histogram, and the ``top_k`` clips with the largest activation (and where it peaks)."""
    source = ModelFrameSource(model, audios, sae.cfg.hook_name, batch_size=batch_size, pad_frames=pad_frames)
    d = sae.d_sae
    edges = torch.linspace(*log10_range, n_bins + 1)
    hist = torch.zeros(d, n_bins)
    fires = torch.zeros(d)
    max_act = torch.zeros(d)
    top_v = torch.full((d, top_k), -1.0)
    top_c = torch.full((d, top_k), -1, dtype=torch.long)
    top_f = torch.zeros((d, top_k), dtype=torch.long)
    n = 0
    for x, clip_idx, frame_idx in tqdm(
        source.iter_with_meta(), total=source.n_chunks, desc="features", disable=not progress
    ):
        f = sae.encode(x)  # [n, d_sae]
        n += len(f)
        active = f > 0
        fires += active.float().sum(0)
        max_act = torch.maximum(max_act, f.max(0).values)
        logs = torch.log10(f.clamp_min(1e-12))
        bins = torch.bucketize(logs, edges[1:-1])  # [n, d_sae] in 0..n_bins-1
        flat = (torch.arange(d) * n_bins + bins).flatten()  # feature j, bin b -> j * n_bins + b
        hist.view(-1).scatter_add_(0, flat, active.flatten().float())
        # One candidate per (clip, feature): the frame where the feature peaks in that clip.
        for c in clip_idx.unique().tolist():
            rows = clip_idx == c
            v, arg = f[rows].max(0)
            frames = frame_idx[rows][arg]
            cand_v = torch.cat([top_v, v[:, None]], 1)
            cand_c = torch.cat([top_c, torch.full((d, 1), c, dtype=torch.long)], 1)
            cand_f = torch.cat([top_f, frames[:, None]], 1)
            keep = cand_v.topk(top_k, dim=1).indices
            top_v, top_c, top_f = cand_v.gather(1, keep), cand_c.gather(1, keep), cand_f.gather(1, keep)
    top_c = torch.where(top_v > 0, top_c, torch.full_like(top_c, -1))
    return FeatureStats(
        n_frames=n,
        frequency=fires / max(n, 1),
        max_act=max_act,
        hist=hist,
        bin_edges=edges,
        top_values=top_v.clamp_min(0),
        top_clip=top_c,
        top_frame=top_f,
        clip_speech_frames=[audio_frames(len(a), model.cfg.encoder.n_ctx, window_samples(model)) for a in audios],
    )


# ---- examples and labels -----------------------------------------------------------------
@dataclass
class Example:
    value: float
    clip: int
    frame: int
    time: float  # seconds, centre of the frame
    word: str  # "" when no word is spoken there
    context: str  # the words around it, the active one in [brackets]
    in_padding: bool  # the frame lies after the end of the audio


@dataclass
class FeatureReport:
    feature: int
    frequency: float
    max_act: float
    label: str
    examples: list[Example]


def label_from_examples(examples: Sequence[Example], positional_spread: float = 2.0) -> str:
    """A heuristic label: ``non-speech`` when most top frames are padding or silence,
    ``positional`` when they sit at the same frame index across different clips, else the
    dominant word (with its share) or the few most common words."""
    if not examples:
        return "never fires"
    n = len(examples)
    silent = sum(e.in_padding or not e.word for e in examples)
    if silent / n >= 0.6:
        return f"non-speech ({silent}/{n} top frames in silence/padding)"
    frames = np.array([e.frame for e in examples])
    if n >= 4 and len({e.clip for e in examples}) == n and frames.std() <= positional_spread:
        return f"positional (frame ~{int(np.median(frames))}, t~{np.median(frames) * ENCODER_FRAME_SECONDS:.2f}s)"
    words = Counter(_norm_word(e.word) for e in examples if e.word)
    (top, count), *rest = words.most_common() or [("", 0)]
    if count / n >= 0.5:
        return f"word '{top}' ({count}/{n})"
    return "mixed: " + ", ".join(f"'{w}'" for w, _ in words.most_common(3))


def _norm_word(w: str) -> str:
    return "".join(ch for ch in w.lower() if ch.isalnum() or ch == "'")


@torch.no_grad()
def feature_reports(
    model: Any,
    stats: FeatureStats,
    audios: Sequence[np.ndarray],
    features: Sequence[int],
    language: str | None = None,
    progress: bool = True,
    aligned: dict[int, list[Word]] | None = None,
) -> list[FeatureReport]:
    """Top examples with the words spoken there and a label. Each clip is aligned once;
    pass a dict as ``aligned`` to keep the alignments (``write_feature_browser`` reuses them)."""
    need = sorted({int(c) for i in features for c in stats.top_clip[i].tolist() if c >= 0})
    words = aligned if aligned is not None else {}
    for c in tqdm([c for c in need if c not in words], desc="aligning words", disable=not progress):
        words[c] = align_words(model, audios[c], language=language)
    reports = []
    for i in features:
        exs = []
        for v, c, fr in zip(stats.top_values[i].tolist(), stats.top_clip[i].tolist(), stats.top_frame[i].tolist()):
            if c < 0:
                continue
            t = (fr + 0.5) * ENCODER_FRAME_SECONDS
            ws = words[c]
            w = word_at(ws, t)
            ctx = " ".join(
                f"[{x.text}]" if x.text == w and x.start <= t + 0.06 and t - 0.06 < x.end else x.text
                for x in ws
                if abs((x.start + x.end) / 2 - t) < 1.0
            )
            exs.append(Example(v, c, fr, t, w, ctx, fr >= stats.clip_speech_frames[c]))
        reports.append(
            FeatureReport(int(i), float(stats.frequency[i]), float(stats.max_act[i]), label_from_examples(exs), exs)
        )
    return reports


# ---- HTML browser --------------------------------------------------------------------------
def wav_base64(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """16-bit PCM mono WAV, base64: ``<audio src="data:audio/wav;base64,...">``."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png_base64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")  # a bare Figure: garbage-collected, no close
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _histogram_png(stats: FeatureStats, i: int) -> str:
    from matplotlib.figure import Figure  # off-screen figure: no pyplot state, no backend switch

    fig = Figure()
    ax = fig.subplots()
    fig.set_size_inches(4, 1.6)
    e = stats.bin_edges.numpy()
    ax.bar(e[:-1], stats.hist[i].numpy(), width=np.diff(e), align="edge", color="#4472c4")
    ax.set_xlabel("log10 activation (firing frames)")
    ax.set_ylabel("frames")
    ax.set_title(f"feature {i}: fires on {100 * float(stats.frequency[i]):.2f}% of frames", fontsize=9)
    return _png_base64(fig)


def _trace_png(trace: np.ndarray, words: Sequence[Word], frame: int, lo: int) -> str:
    from matplotlib.figure import Figure  # off-screen figure: no pyplot state, no backend switch

    fig = Figure()
    ax = fig.subplots()
    fig.set_size_inches(4, 1.2)
    t = (np.arange(len(trace)) + lo + 0.5) * ENCODER_FRAME_SECONDS
    ax.plot(t, trace, color="#c0504d")
    ax.axvline((frame + 0.5) * ENCODER_FRAME_SECONDS, color="k", lw=0.5, ls=":")
    for w in words:
        if t[0] <= w.start <= t[-1]:
            ax.axvline(w.start, color="#999", lw=0.5)
            ax.text(w.start, ax.get_ylim()[1], w.text, fontsize=6, va="top")
    ax.set_xlabel("s", fontsize=7)
    ax.tick_params(labelsize=6)
    return _png_base64(fig)


@torch.no_grad()
def write_feature_browser(
    model: Any,
    sae: SparseAutoencoder,
    stats: FeatureStats,
    reports: Sequence[FeatureReport],
    audios: Sequence[np.ndarray],
    out_dir: str | Path,
    snippet_seconds: float = 1.2,
    title: str = "SAE features",
    language: str | None = None,
    aligned: dict[int, list[Word]] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/features/feature_{i}.html``, each
    self-contained (audio as base64 WAV, plots as base64 PNG), and ``features.json``."""
    out = Path(out_dir)
    (out / "features").mkdir(parents=True, exist_ok=True)
    clips = sorted({e.clip for r in reports for e in r.examples})
    source = ModelFrameSource(model, audios, sae.cfg.hook_name, batch_size=1, pad_frames=8)
    feats = [r.feature for r in reports]
    traces = {c: sae.encode(source.chunk_with_meta(c)[0])[:, feats].numpy() for c in clips}
    aligned = aligned if aligned is not None else {}
    for c in clips:
        if c not in aligned:
            aligned[c] = align_words(model, audios[c], language=language)
    half = int(snippet_seconds / 2 / ENCODER_FRAME_SECONDS)
    rows = []
    for col, r in enumerate(reports):
        parts = [
            f"<h2>Feature {r.feature}</h2><p><b>{html.escape(r.label)}</b> &middot; frequency "
            f"{100 * r.frequency:.3f}% &middot; max {r.max_act:.2f}</p>",
            f'<img src="data:image/png;base64,{_histogram_png(stats, r.feature)}">',
            "<table><tr><th>#</th><th>act</th><th>clip</th><th>time</th><th>words</th><th>audio</th><th>trace</th></tr>",
        ]
        for k, e in enumerate(r.examples):
            audio = audios[e.clip]
            lo_f = max(0, e.frame - half)
            hi_f = e.frame + half
            snippet = audio[lo_f * SAMPLES_PER_ENCODER_FRAME : hi_f * SAMPLES_PER_ENCODER_FRAME]
            player = (
                f'<audio controls src="data:audio/wav;base64,{wav_base64(snippet)}"></audio>'
                if len(snippet)
                else "(padding: no audio)"
            )
            tr = traces[e.clip][lo_f:hi_f, col]
            parts.append(
                f"<tr><td>{k + 1}</td><td>{e.value:.2f}</td><td>{e.clip}</td><td>{e.time:.2f}s</td>"
                f"<td>{html.escape(e.context) or '(silence)'}</td><td>{player}</td>"
                f'<td><img src="data:image/png;base64,{_trace_png(tr, aligned[e.clip], e.frame, lo_f)}"></td></tr>'
            )
        parts.append("</table>")
        page = _page(f"{title}: feature {r.feature}", "\n".join(parts) + '<p><a href="../index.html">index</a></p>')
        (out / "features" / f"feature_{r.feature}.html").write_text(page)
        top_words = ", ".join(html.escape(e.word or "-") for e in r.examples[:5])
        rows.append(
            f'<tr><td><a href="features/feature_{r.feature}.html">{r.feature}</a></td>'
            f"<td>{100 * r.frequency:.3f}%</td><td>{r.max_act:.2f}</td><td>{html.escape(r.label)}</td>"
            f"<td>{top_words}</td></tr>"
        )
    freq = stats.frequency.numpy()
    summary = (
        f"<p>{stats.n_frames} frames from {len(audios)} clips; SAE {sae.cfg.architecture} d_sae={sae.d_sae} "
        f"on <code>{html.escape(sae.cfg.hook_name)}</code>; dead {100 * float((freq == 0).mean()):.1f}%, "
        f"dense (&gt;10%) {100 * float((freq > 0.1).mean()):.1f}%</p>"
    )
    index = _page(
        title,
        summary + "<table><tr><th>feature</th><th>freq</th><th>max</th><th>label</th>"
        "<th>top words</th></tr>" + "\n".join(rows) + "</table>",
    )
    (out / "index.html").write_text(index)
    (out / "features.json").write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return out


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:middle}"
        "audio{height:28px;width:180px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


__all__ = [
    "Example",
    "FeatureReport",
    "FeatureStats",
    "Word",
    "align_words",
    "collect_feature_stats",
    "feature_reports",
    "label_from_examples",
    "wav_base64",
    "word_at",
    "write_feature_browser",
]
