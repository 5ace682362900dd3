"""Head detectors for audio: score every head for a named behaviour from its attention patterns.

TransformerLens's ``head_detector`` idea, for encoder-decoders. Each detector is a reference
pattern ``R[q, k]`` (which keys a head with that behaviour attends to from query ``q``); a head's
score is the attention mass it puts on those keys, averaged over the query rows that have any::

    score(head) = mean_{items, q : R[q] != 0}  sum_k pattern[head, q, k] R[q, k]     (in [0, 1] for 0/1 R)

Keys have times where they are audio: encoder frames (the encoder's self-attention and Whisper's
cross-attention; 20 ms each, ``frames_between``) and Qwen2-Audio's audio-token positions in the
decoder (``pool_stride`` frames each). Detectors:

* ``alignment``: from the row writing text token ``i`` (decoder position ``prompt_len - 1 + i``),
  the keys inside the time of the word that token belongs to (``words`` needed; widened by
  ``tolerance_s``): the cross-attention that follows the audio, as Whisper's alignment heads do.
* ``previous_token``: decoder self-attention, ``R[q, q - 1] = 1``.
* ``duplicate_token`` (alias ``repetition``): decoder self-attention to earlier copies of the
  current token, ``R[q, k] = [tok_k = tok_q], k < q`` (the loop mechanism);
  ``induction``: to the token after an earlier copy, ``R[q, k] = [tok_{k-1} = tok_q], k < q``.
* ``padding``: keys after the end of the audio (Whisper pads every clip to 30 s); ``silence``:
  keys outside every word (needs ``words``; padding included).
* ``first_frame``: the first audio key.
* ``reference``: your own ``R``: a tensor ``[q, k]`` or a function ``(info) -> [q, k]`` of a
  :class:`PatternInfo`, scored on ``attention`` (e.g. ``"decoder.cross_attn"``).

``detect_heads`` returns ``Float[Tensor, "layer head"]`` when one attention applies, else a dict
keyed ``"encoder.attn"``, ``"decoder.attn"``, ``"decoder.cross_attn"``. An item is audio (a path
or a 16 kHz array) or a dict / :class:`DetectorItem` with optional ``text`` and ``words`` =
``[(word, start_s, end_s), ...]``; the decoder reads ``words`` joined (or ``text``, or the model's
own greedy transcript) teacher-forced after the model's prompt.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

DETECTORS = (
    "alignment",
    "previous_token",
    "duplicate_token",
    "repetition",
    "induction",
    "padding",
    "silence",
    "first_frame",
    "reference",
)
_ATTENTIONS = {
    # detector -> which attention patterns it scores ("audio" = every attention whose keys are audio)
    "alignment": "audio_decoder",
    "previous_token": "decoder.attn",
    "duplicate_token": "decoder.attn",
    "repetition": "decoder.attn",
    "induction": "decoder.attn",
    "padding": "audio",
    "silence": "audio",
    "first_frame": "audio",
}


@dataclass
class DetectorItem:
    """One utterance: ``audio`` (path or 16 kHz array), optional ``text`` and ``words``
    (``[(word, start_s, end_s), ...]``, e.g. from a forced aligner or audio built word by word)."""

    audio: Any
    text: str | None = None
    words: Sequence[tuple[str, float, float]] | None = None


@dataclass
class PatternInfo:
    """What a reference function sees for one item and one attention: the decoder tokens and the
    text token each row writes, the keys' time spans (``None`` where keys are not audio), the audio
    duration and the words."""

    attention: str
    n_query: int
    n_key: int
    tokens: list[int]
    prompt_len: int
    key_spans: torch.Tensor | None  # [k, 2] seconds, or None
    duration_s: float
    words: Sequence[tuple[str, float, float]] | None
    token_word: list[int | None] = field(default_factory=list)  # word index of each text token


def _as_item(x: Any) -> DetectorItem:
    if isinstance(x, DetectorItem):
        return x
    if isinstance(x, Mapping):
        return DetectorItem(x["audio"], x.get("text"), x.get("words"))
    return DetectorItem(x)


def _tokens_for(model: Any, item: DetectorItem) -> tuple[list[int], list[int | None]]:
    """Decoder tokens for the item's text and, with words, the word index of each token."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("detectors need the model's tokenizer (to tokenise text / words)")
    # Whisper's transcripts start with a space (" The"); Qwen2's BPE text does not.
    lead = " " if model.cfg.architecture == "whisper" else ""
    if item.words:
        toks, owner = [], []
        for i, (w, _, _) in enumerate(item.words):
            ids = list(tok.encode((lead if i == 0 else " ") + str(w).strip()))
            toks += ids
            owner += [i] * len(ids)
        return toks, owner
    if item.text:
        ids = list(tok.encode(lead + item.text.strip()))
        return ids, [None] * len(ids)
    ids = list(model.transcribe(item.audio).tokens)
    return ids, [None] * len(ids)


def _attention_names(model: Any, which: str) -> list[str]:
    have = [f"{s}.{k}" for s in ("encoder", "decoder") for k in model.attention_kinds(s)]
    qwen_like = "decoder.cross_attn" not in have
    if which == "audio":
        return [a for a in have if a != "decoder.attn"] + (["decoder.attn"] if qwen_like else [])
    if which == "audio_decoder":
        return ["decoder.cross_attn"] if not qwen_like else ["decoder.attn"]
    if which not in have:
        raise ValueError(f"attention {which!r} not in this model; it has {have}")
    return [which]


def _key_spans(model: Any, attention: str, n_key: int, tokens_full: torch.Tensor) -> torch.Tensor | None:
    """``[k, 2]`` start/end seconds of each key that is audio (NaN for text keys), or None."""
    from hooked_asr.audio import ENCODER_FRAME_SECONDS

    f = ENCODER_FRAME_SECONDS
    if attention in ("encoder.attn", "decoder.cross_attn"):
        if attention == "decoder.cross_attn" and model.cfg.encoder.pool_stride:
            f *= model.cfg.encoder.pool_stride
        start = torch.arange(n_key, dtype=torch.float32) * f
        return torch.stack([start, start + f], -1)
    audio_id = getattr(model, "audio_token_id", None)
    if audio_id is None:
        return None
    is_audio = (tokens_full == audio_id).cpu()
    if not is_audio.any():
        return None
    f *= max(model.cfg.encoder.pool_stride, 1)
    spans = torch.full((n_key, 2), float("nan"))
    j = torch.cumsum(is_audio.long(), 0) - 1
    start = j.float() * f
    spans[is_audio] = torch.stack([start, start + f], -1)[is_audio]
    return spans


def _reference(kind: str, info: PatternInfo, tolerance_s: float) -> torch.Tensor:
    q, k = info.n_query, info.n_key
    R = torch.zeros(q, k)
    spans = info.key_spans
    if kind in ("previous_token", "duplicate_token", "repetition", "induction"):
        t = torch.as_tensor(info.tokens)
        if kind == "previous_token":
            R[torch.arange(1, q), torch.arange(0, q - 1)] = 1.0
        else:
            same = (
                t[:, None] == t[None, :]
                if kind != "induction"
                else torch.cat([torch.zeros(q, 1, dtype=torch.bool), t[:, None] == t[None, :-1]], 1)
            )
            R = (same & torch.ones(q, k, dtype=torch.bool).tril(-1)).float()
        return R
    if spans is None:
        raise ValueError(f"detector {kind!r} needs audio keys; {info.attention} has none here")
    valid = ~torch.isnan(spans[:, 0])
    if kind == "first_frame":
        R[:, int(valid.nonzero()[0])] = 1.0
        return R
    if kind == "padding":
        R[:, valid & (spans[:, 0] >= info.duration_s)] = 1.0
        return R
    if not info.words:
        raise ValueError(f"detector {kind!r} needs word timings: items with words=[(word, start_s, end_s), ...]")
    inside = torch.zeros(k, dtype=torch.bool)
    windows = []
    for _, s, e in info.words:
        w = valid & (spans[:, 1] > s - tolerance_s) & (spans[:, 0] < e + tolerance_s)
        windows.append(w)
        inside |= w
    if kind == "silence":
        R[:, valid & ~inside] = 1.0
        return R
    # alignment: row writing text token i (position prompt_len - 1 + i) -> its word's keys
    for i, wi in enumerate(info.token_word):
        row = info.prompt_len - 1 + i
        if wi is not None and 0 <= row < q:
            R[row, windows[wi]] = 1.0
    return R


@torch.no_grad()
def detect_heads(
    model: Any,
    items: Iterable[Any],
    kind: str | Sequence[str],
    *,
    reference: torch.Tensor | Callable[[PatternInfo], torch.Tensor] | None = None,
    attention: str | None = None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    tolerance_s: float = 0.0,
    progress: bool = True,
) -> Any:
    """Score every head of the attentions ``kind`` applies to (see the module docstring).

    Returns ``[layer, head]`` scores, or a dict by attention where several apply; a list of
    kinds returns a dict by kind of those (one forward per item serves every kind).
    ``exclude_bos`` / ``exclude_current_token`` zero the pattern's first key / diagonal before
    scoring (TransformerLens's options, for decoder self-attention). ``attention`` restricts
    (or, for ``reference``, chooses) the attention scored. Only the scored patterns are cached.
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        if k not in DETECTORS:
            raise ValueError(f"unknown detector {k!r}; one of {list(DETECTORS)}")
    if "reference" in kinds and (reference is None or attention is None):
        raise ValueError(
            "kind='reference' needs reference= (a [q, k] tensor or a function of PatternInfo) "
            "and attention= ('encoder.attn', 'decoder.attn' or 'decoder.cross_attn')"
        )
    names = {
        k: _attention_names(
            model, attention if (attention and (k == "reference" or len(kinds) == 1)) else _ATTENTIONS[k]
        )
        for k in kinds
    }
    items = [_as_item(x) for x in items]
    if not items:
        raise ValueError("detect_heads needs at least one item")
    n_heads = {a: getattr(model.cfg, a.split(".")[0]).n_heads for ns in names.values() for a in ns}
    sums = {
        (k, a): torch.zeros(model.n_layers[a.split(".")[0]], n_heads[a], dtype=torch.float64)
        for k in kinds
        for a in names[k]
    }
    rows = dict.fromkeys(sums, 0)
    hooks = {
        a: [
            f"{a.split('.')[0]}.blocks.{l}.{a.split('.')[1]}.hook_pattern"
            for l in range(model.n_layers[a.split(".")[0]])
        ]
        for a in n_heads
    }
    from tqdm.auto import tqdm

    from hooked_asr.audio import SAMPLE_RATE, load_audio

    for item in tqdm(items, desc=f"detect_heads({', '.join(kinds)})", disable=not progress):
        audio = load_audio(item.audio, allow_silence=True)
        duration = len(audio) / SAMPLE_RATE
        toks, owner = _tokens_for(model, item)
        tf = model.teacher_forced_inputs(audio, toks)
        _, cache = model.run_with_cache(**tf.kwargs, names_filter=[h for hs in hooks.values() for h in hs])
        full = tf.tokens[0]
        for a in n_heads:
            pats = [cache[h][0].float() for h in hooks[a]]  # [head, q, k] per layer
            if exclude_bos or exclude_current_token:
                pats = [p.clone() for p in pats]
                for p in pats:
                    if exclude_bos:
                        p[..., 0] = 0
                    if exclude_current_token:
                        p.diagonal(dim1=-2, dim2=-1).zero_()
            n_q, n_k = pats[0].shape[-2:]
            info = PatternInfo(
                a,
                n_q,
                n_k,
                full.tolist() if a.startswith("decoder") else [],
                tf.prompt_len,
                _key_spans(model, a, n_k, full),
                duration,
                item.words,
                owner,
            )
            for k in kinds:
                if a not in names[k]:
                    continue
                if k == "reference":
                    R = reference(info) if callable(reference) else reference
                else:
                    R = _reference(k, info, tolerance_s)
                R = torch.as_tensor(R, dtype=torch.float32).to(pats[0].device)
                if R.shape != (n_q, n_k):
                    raise ValueError(f"the reference pattern for {a} must be [{n_q}, {n_k}] here, got {tuple(R.shape)}")
                live = R.abs().sum(-1) > 0
                for l, p in enumerate(pats):
                    sums[(k, a)][l] += (p * R)[:, live].sum((-1, -2)).double().cpu()
                rows[(k, a)] += int(live.sum())
    out: dict[str, Any] = {}
    for k in kinds:
        # An attention with no target anywhere (Qwen2-Audio's decoder never sees padded audio) is left out.
        per = {a: (sums[(k, a)] / rows[(k, a)]).float() for a in names[k] if rows[(k, a)]}
        if not per:
            raise ValueError(
                f"detector {k!r} found no query row with a target in {names[k]} over these items "
                "(e.g. no repeated tokens for duplicate_token, no padding for padding)"
            )
        out[k] = next(iter(per.values())) if len(per) == 1 else per
    return out[kinds[0]] if isinstance(kind, str) else out


def top_heads(scores: Float[torch.Tensor, "layer head"], k: int) -> list[tuple[int, int]]:
    """The ``k`` highest-scoring ``(layer, head)`` pairs, best first."""
    flat = scores.flatten().argsort(descending=True)[:k]
    return [(int(i) // scores.shape[1], int(i) % scores.shape[1]) for i in flat]


def save_head_scores(
    scores: Float[torch.Tensor, "layer head"] | Mapping[str, torch.Tensor],
    out: str | Path,
    kind: str = "",
    marked: Sequence[Sequence[int]] = (),
) -> dict[str, Path]:
    """``{out}.json`` and ``{out}.csv`` (attention, layer, head, score) and one ``{out}_{attention}.png``
    heatmap per attention; ``marked`` heads (e.g. ``model.cfg.alignment_heads``) get a ``*``."""
    from hooked_asr.plotting import plot_heatmap

    d = dict(scores) if isinstance(scores, Mapping) else {"heads": scores}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out.with_suffix(".json"), "csv": out.with_suffix(".csv")}
    paths["json"].write_text(
        json.dumps(
            {"detector": kind, "marked": [list(m) for m in marked], "scores": {a: s.tolist() for a, s in d.items()}},
            indent=1,
        )
    )
    with paths["csv"].open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["attention", "layer", "head", "score"])
        for a, s in d.items():
            for l in range(s.shape[0]):
                for h in range(s.shape[1]):
                    wr.writerow([a, l, h, f"{float(s[l, h]):.6f}"])
    mark = {tuple(m) for m in marked}
    for a, s in d.items():
        v = s.numpy()
        text = [[f"{v[l, h]:.2f}{'*' if (l, h) in mark else ''}" for h in range(v.shape[1])] for l in range(v.shape[0])]
        paths[a] = out.parent / f"{out.name}_{a.replace('.', '_')}.png"
        plot_heatmap(
            v,
            [str(l) for l in range(v.shape[0])],
            [str(h) for h in range(v.shape[1])],
            cell_text=text,
            title=f"{kind} score, {a}" + (" (* marked)" if mark else ""),
            cbar_label="score",
            vmin=0.0,
            vmax=max(float(np.nanmax(v)), 1e-6),
            path=paths[a],
        )
    return paths


def word_by_word(
    words: Sequence[str], voice: str = "en-us", gap_s: float = 0.12, rate: int = 160, lead_s: float = 0.2
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Speech built word by word with espeak-ng, so every word's timing is known exactly:
    returns ``(audio, [(word, start_s, end_s), ...])`` (leading/trailing silence of each word
    trimmed at 1 % of its peak, words separated by ``gap_s`` of silence)."""
    from hooked_asr.audio import SAMPLE_RATE
    from hooked_asr.datasets.espeak import synthesize

    parts = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    timings = []
    t = lead_s
    for w in words:
        a = synthesize(w, voice=voice, rate=rate)
        loud = np.nonzero(np.abs(a) > 0.01 * (np.abs(a).max() + 1e-9))[0]
        a = a[loud[0] : loud[-1] + 1] if len(loud) else a
        timings.append((w, t, t + len(a) / SAMPLE_RATE))
        parts += [a, np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
        t += len(a) / SAMPLE_RATE + gap_s
    return np.concatenate(parts).astype(np.float32), timings


__all__ = ["DETECTORS", "DetectorItem", "PatternInfo", "detect_heads", "save_head_scores", "top_heads", "word_by_word"]
