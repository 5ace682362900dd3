"""How good is an SAE: reconstruction, sparsity, and what splicing it costs the model.

Over frames ``x_n`` (streamed, never all in memory)::

    FVU   = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2
    L0    = mean_n #{i : f_i(x_n) > 0}
    dead  = fraction of features that never fire on these frames
    dense = fraction of features that fire on more than ``dense_threshold`` of the frames

Downstream (per clip, one at a time so each clip's speech frames can be masked; the
encoder runs once per condition and the decoder reads its stored output, which needs
Whisper's ``forward(decoder_input_ids=, encoder_hidden_states=)``):

* WER of the greedy transcript with and without the splice (against references if given,
  else the spliced transcript is scored against the clean one);
* decoder cross-entropy with teacher forcing on a target token sequence (the clean
  greedy transcript + end of text, or the tokenised reference), for the clean model, the
  spliced model and a mean-ablated model (every spliced frame replaced by the mean
  activation), and ``CE recovered = (CE_ablate - CE_splice) / (CE_ablate - CE_clean)``;
* ``KL(clean || spliced)`` of the next-token distributions, averaged over target positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hooked_asr.audio import audio_frames, window_samples
from hooked_asr.sae.frames import FrameSource
from hooked_asr.sae.model import SparseAutoencoder
from hooked_asr.sae.steering import splice
from hooked_asr.text import corpus_word_error_rate


@dataclass
class ReconstructionMetrics:
    n_frames: int
    fvu: float
    mse: float  # mean over frames of ||x - x_hat||^2 (unscaled units)
    l0: float
    dead_fraction: float
    dense_fraction: float
    feature_frequency: list[float] = field(repr=False)

    def summary(self) -> dict[str, float]:
        d = asdict(self)
        d.pop("feature_frequency")
        return d


@torch.no_grad()
def reconstruction_metrics(
    sae: SparseAutoencoder,
    source: FrameSource,
    max_frames: int | None = None,
    dense_threshold: float = 0.1,
    progress: bool = False,
) -> ReconstructionMetrics:
    """FVU, L0, dead and dense fractions over (up to ``max_frames`` of) ``source``'s frames."""
    n = 0
    sq_err = 0.0
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    sum_sq = 0.0
    l0 = 0.0
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    for chunk in tqdm(source, desc="SAE eval", disable=not progress):
        x = chunk.reshape(-1, chunk.shape[-1]).float()
        if max_frames is not None:
            x = x[: max_frames - n]
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sq_err += float((x - x_hat).double().pow(2).sum())
        sum_x += x.double().sum(0)
        sum_sq += float(x.double().pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        fires += active.double().sum(0)
        n += len(x)
        if max_frames is not None and n >= max_frames:
            break
    if n == 0:
        raise ValueError("the frame source gave no frames")
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n  # sum ||x - mean||^2
    freq = fires / n
    return ReconstructionMetrics(
        n_frames=n,
        fvu=sq_err / max(total_var, 1e-12),
        mse=sq_err / n,
        l0=l0 / n,
        dead_fraction=float((freq == 0).double().mean()),
        dense_fraction=float((freq > dense_threshold).double().mean()),
        feature_frequency=freq.tolist(),
    )


def _text(model: Any, result: Any) -> str:
    if result.text is not None:
        return result.text
    return " ".join(str(t) for t in result.tokens)  # no tokenizer: compare token ids as words


def _target_tokens(model: Any, clean: Any, reference: str | None) -> list[int]:
    tok = getattr(model, "tokenizer", None)
    if reference is not None and tok is not None and hasattr(tok, "encode"):
        ids = list(tok.encode(" " + reference.strip()))
    else:
        ids = list(clean.tokens)
    return ids + [model.cfg.eos_token_id]


def _frame_mask(model: Any, audio: np.ndarray, which: str, pad_frames: int) -> torch.Tensor | None:
    if which == "all":
        return None
    if which != "speech":
        raise ValueError(f"frames must be 'speech' or 'all', got {which!r}")
    n_ctx = model.cfg.encoder.n_ctx
    n = min(n_ctx, audio_frames(len(audio), n_ctx, window_samples(model)) + pad_frames)
    return torch.arange(n_ctx) < n


@dataclass
class SpliceMetrics:
    n_clips: int
    wer_clean: float | None
    wer_spliced: float | None
    wer_spliced_vs_clean: float
    ce_clean: float
    ce_spliced: float
    ce_mean_ablated: float
    ce_recovered: float
    kl_clean_spliced: float
    transcripts: list[dict[str, str]] = field(repr=False, default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("transcripts")
        return d


@torch.no_grad()
def splice_metrics(
    model: Any,
    sae: SparseAutoencoder,
    audios: Sequence[np.ndarray],
    references: Sequence[str] | None = None,
    language: str | None = None,
    frames: str = "speech",
    pad_frames: int = 8,
    max_new_tokens: int | None = 96,
    progress: bool = True,
) -> SpliceMetrics:
    """WER and decoder cross-entropy with and without the SAE spliced in (module docstring).

    ``frames="speech"`` splices the frames that overlap the audio plus ``pad_frames`` (what
    :class:`~hooked_asr.sae.frames.ModelFrameSource` trains on); ``"all"`` splices all
    1500, padding included.
    """
    if references is not None and len(references) != len(audios):
        raise ValueError(f"{len(references)} references for {len(audios)} clips")
    mean_act = _mean_activation(model, sae, audios[: min(len(audios), 8)], frames, pad_frames)
    rows: list[dict[str, str]] = []
    ce = {"clean": [], "spliced": [], "ablated": []}
    kls: list[float] = []
    for i, audio in enumerate(tqdm(audios, desc="splice eval", disable=not progress)):
        mask = _frame_mask(model, audio, frames, pad_frames)
        clean = model.transcribe(audio, language=language, max_new_tokens=max_new_tokens)
        feats = model.prepare_features(audio)

        def ablate(x: torch.Tensor, hook: Any) -> torch.Tensor:
            m = torch.ones(x.shape[1], dtype=torch.bool) if mask is None else mask
            return torch.where(m[None, :, None].to(x.device), mean_act.to(x), x)

        # Encode once per condition; the decoder then reads the stored encoder output
        # (the same as transcribing with the hooks live: the encoder runs once per clip).
        enc_clean = model.encode(**feats)
        with splice(model, sae, frame_mask=mask):
            enc_spliced = model.encode(**feats)
        with model.hooks(fwd_hooks=[(sae.cfg.hook_name, ablate)]):
            enc_ablated = model.encode(**feats)
        gen = model.generate(
            feats["input_features"], clean.prompt, max_new_tokens=max_new_tokens, encoder_hidden_states=enc_spliced
        )
        toks = gen.tokens[0].tolist()
        toks = toks[: toks.index(model.cfg.eos_token_id)] if model.cfg.eos_token_id in toks else toks
        tok = getattr(model, "tokenizer", None)
        spliced_text = tok.decode(toks).strip() if tok is not None else " ".join(map(str, toks))
        ref = references[i] if references is not None else None
        rows.append({"reference": ref or "", "clean": _text(model, clean), "spliced": spliced_text})

        target = _target_tokens(model, clean, ref)[: model.cfg.decoder.n_ctx - len(clean.prompt)]
        ids = torch.tensor([clean.prompt + target], device=enc_clean.device)
        sl = slice(len(clean.prompt) - 1, ids.shape[1] - 1)
        y = ids[0, len(clean.prompt) :]
        logits = {
            k: model(decoder_input_ids=ids, encoder_hidden_states=e)[0, sl].float()
            for k, e in (("clean", enc_clean), ("spliced", enc_spliced), ("ablated", enc_ablated))
        }
        for k in ce:
            ce[k].append(float(F.cross_entropy(logits[k], y)))
        lp_c, lp_s = logits["clean"].log_softmax(-1), logits["spliced"].log_softmax(-1)
        kls.append(float((lp_c.exp() * (lp_c - lp_s)).sum(-1).mean()))

    c, s, a = (float(np.mean(ce[k])) for k in ("clean", "spliced", "ablated"))
    refs = [r["reference"] for r in rows]
    return SpliceMetrics(
        n_clips=len(audios),
        wer_clean=corpus_word_error_rate(refs, [r["clean"] for r in rows]) if references is not None else None,
        wer_spliced=corpus_word_error_rate(refs, [r["spliced"] for r in rows]) if references is not None else None,
        wer_spliced_vs_clean=corpus_word_error_rate([r["clean"] for r in rows], [r["spliced"] for r in rows]),
        ce_clean=c,
        ce_spliced=s,
        ce_mean_ablated=a,
        ce_recovered=(a - s) / (a - c) if abs(a - c) > 1e-12 else float("nan"),
        kl_clean_spliced=float(np.mean(kls)),
        transcripts=rows,
    )


def _mean_activation(
    model: Any, sae: SparseAutoencoder, audios: Sequence[np.ndarray], frames: str, pad_frames: int
) -> torch.Tensor:
    """Mean activation at the SAE's hook over (the spliced frames of) a few clips."""
    from hooked_asr.sae.frames import ModelFrameSource

    src = ModelFrameSource(
        model,
        audios,
        sae.cfg.hook_name,
        batch_size=4,
        pad_frames=pad_frames if frames == "speech" else model.cfg.encoder.n_ctx,
    )
    total, n = 0.0, 0
    for chunk in src:
        total = total + chunk.double().sum(0)
        n += len(chunk)
    return (total / n).float()


# ---- feature categories (Pluth et al. 2026's kinds) ------------------------------------------
FEATURE_CATEGORIES = ("non-linguistic", "positional", "lexical", "morphological", "semantic", "phonetic", "mixed")
_SUFFIXES = ("ing", "ed", "es", "s", "ly", "er", "est", "tion", "ment", "ness")
# small closed word classes beyond the probe categories, so "semantic" covers everyday sentences
_EXTRA_CLASSES = {
    "numbers": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twenty", "hundred"),
    "colours": ("red", "blue", "green", "yellow", "black", "white", "brown", "grey", "gray", "pink", "purple"),
    "time": (
        "morning",
        "evening",
        "night",
        "day",
        "today",
        "tomorrow",
        "yesterday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "week",
        "year",
        "hour",
        "minute",
    ),
    "function": (
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "on",
        "at",
        "and",
        "or",
        "is",
        "are",
        "was",
        "it",
        "he",
        "she",
        "we",
        "they",
        "you",
        "i",
        "his",
        "her",
        "their",
        "my",
        "our",
        "for",
        "with",
        "by",
        "from",
    ),
}


def _word_class(word: str) -> str | None:
    from hooked_asr.datasets.labelled import CATEGORY_WORDS

    for name, words in {**CATEGORY_WORDS, **_EXTRA_CLASSES}.items():
        if word in words or word.rstrip("s") in words:
            return name
    return None


def feature_category(
    label: str, words: Sequence[str], phonemes: Sequence[str] | None = None, share: float = 0.5
) -> str:
    """Sort one labelled feature into the SAE paper's kinds (phonetic, semantic, morphological,
    positional, lexical, non-linguistic), or ``mixed``.

    ``label`` is :func:`hooked_asr.sae.features.label_from_examples`' label, ``words`` the
    words under its top frames ("" in silence), ``phonemes`` optionally their phoneme strings.
    In order: ``non-speech`` / ``positional`` labels keep their kind; one word on at least
    ``share`` of the frames is *lexical*; distinct words sharing a suffix on ``share`` of them
    *morphological*; one word class (fruits, numbers, colours, ...) *semantic*; a phoneme
    bigram or onset common to ``max(share, 0.6)`` of the words *phonetic*; else *mixed*."""
    if label.startswith("non-speech"):
        return "non-linguistic"
    if label.startswith("positional"):
        return "positional"
    ws = ["".join(ch for ch in w.lower() if ch.isalnum() or ch == "'") for w in words if w]
    if not ws:
        return "non-linguistic"
    n = len(ws)
    from collections import Counter

    if Counter(ws).most_common(1)[0][1] / n >= share:
        return "lexical"
    for suf in _SUFFIXES:
        hit = [w for w in ws if w.endswith(suf) and len(w) > len(suf) + 2]
        if len(hit) / n >= share and len(set(hit)) >= 2:
            return "morphological"
    classes = Counter(c for c in map(_word_class, ws) if c)
    if classes and classes.most_common(1)[0][1] / n >= share:
        return "semantic"
    if phonemes:
        ps = [p for p in phonemes if p]
        grams = Counter(g for p in ps for g in {p[i : i + 2] for i in range(len(p) - 1)})
        onsets = Counter(p[0] for p in ps)
        top = max([c for _, c in grams.most_common(1)] + [c for _, c in onsets.most_common(1)], default=0)
        if top / n >= max(share, 0.6):
            return "phonetic"
    return "mixed"


__all__ = [
    "FEATURE_CATEGORIES",
    "ReconstructionMetrics",
    "SpliceMetrics",
    "feature_category",
    "reconstruction_metrics",
    "splice_metrics",
]
