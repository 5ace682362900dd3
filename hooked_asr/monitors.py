"""Probe monitors: score every transcript with linear probes as it is produced.

    >>> speech = ProbeMonitor("speech", speech_probe, "encoder.blocks.3.hook_resid_post")
    >>> halluc = ProbeMonitor("hallucination", halluc_probe, "decoder.blocks.3.hook_resid_post")
    >>> out = transcribe_with_monitors(model, audio, [speech, halluc])
    >>> out.text, out.extra["monitors"]        # {"speech": 0.98, "hallucination": 0.04}

A monitor reads its hook exactly as :func:`~hooked_asr.activations.extract_activations`
stores it, so a probe trained on a store applies unchanged:

- encoder hooks (default ``mean``): captured during transcription's own encoder pass
  (no extra encoder work) and averaged over the clip's audio frames,
  ``a = (1/n) sum_{t<n} x[t]``, ``n = audio_frames(n_samples, T)``;
- decoder hooks (default ``final``): one teacher-forced decoder pass over
  ``prompt + transcript + <|endoftext|>`` after generation, reading the end-of-text
  position. Why not capture during generation: greedy decoding stops as soon as it
  *produces* end-of-text, so that token is never fed back and its residual never exists;
  the last generation step sees the last transcript token instead, a different position
  from the one the probe was trained on. The extra pass reuses Whisper's encoder output
  and runs the decoder once over the sequence (with the KV cache generation ran it
  token by token), so it costs about one decoder forward.

The score of a classification monitor is ``p(positive | a)`` (``positive`` defaults to
the largest label, ``classes[-1]``, e.g. 1 for "hallucinated" or "speech"); a regression
monitor's score is its prediction. ``result.extra["monitors"][name]`` holds the score and
``result.extra["monitor_labels"][name]`` the predicted label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_asr.activations.pooling import (
    audio_frames,
    default_pooling,
    flatten_positions,
    normalise_pooling,
    pool,
    window_samples,
)
from hooked_asr.probing import LinearProbe


@dataclass
class ProbeMonitor:
    """A probe bound to a hook and a pooling rule (``None``: encoder ``mean``, decoder ``final``)."""

    name: str
    probe: LinearProbe
    hook_name: str
    pooling: str | None = None
    positive: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.probe, (str, Path)):
            self.probe = LinearProbe.load(self.probe)
        self.pooling = normalise_pooling(self.pooling or default_pooling(self.hook_name), self.hook_name)
        if self.pooling == "none":
            raise ValueError(f"monitor {self.name!r}: pooling 'none' gives one row per position; a monitor needs "
                             "one vector per clip ('mean' or, for decoder hooks, 'final')")
        if self.probe.task == "classification":
            pos = self.probe.classes[-1] if self.positive is None else self.positive
            if pos not in self.probe.classes:
                raise ValueError(f"monitor {self.name!r}: positive class {pos!r} is not in {self.probe.classes}")
            self.positive = pos

    @property
    def is_encoder(self) -> bool:
        return self.hook_name.startswith("encoder.")

    @torch.no_grad()
    def score(self, x: Float[torch.Tensor, "n d"]) -> tuple[list[float], list[Any]]:
        """Scores and predicted labels for pooled rows ``x``."""
        if x.shape[-1] != self.probe.d_in:
            raise ValueError(f"monitor {self.name!r}: {self.hook_name} gives {x.shape[-1]}-d vectors; "
                             f"the probe reads {self.probe.d_in}")
        if self.probe.task == "regression":
            pred = self.probe.predict(x).double().cpu().tolist()
            return pred, pred
        proba = self.probe.predict_proba(x)
        k = self.probe.classes.index(self.positive)
        labels = [self.probe.classes[i] for i in self.probe.predict_index(x).cpu().tolist()]
        return proba[:, k].double().cpu().tolist(), labels


class _Capture:
    def __init__(self, names: Sequence[str]):
        self.names = list(dict.fromkeys(names))
        self.acts: dict[str, torch.Tensor] = {}

    def hooks(self) -> list[tuple[str, Any]]:
        def grab(x: torch.Tensor, hook: Any) -> None:
            self.acts[hook.name] = x.detach()  # the latest call wins (language detection re-runs the encoder)

        return [(n, grab) for n in self.names]


def _as_clips(audio: Any) -> tuple[list[np.ndarray], bool]:
    from hooked_asr.audio import load_audio

    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        raise ValueError("monitors need raw audio (a path or 1-D array per clip), not log-mel features: encoder "
                         "pooling averages over the clip's real frames, which the padded features do not tell")
    if isinstance(audio, (list, tuple)):
        if not audio:
            raise ValueError("an empty list of audio was passed")
        return [load_audio(a) for a in audio], True
    return [load_audio(audio)], False


@torch.no_grad()
def _monitor_batch(model: Any, clips: list[np.ndarray], monitors: Sequence[ProbeMonitor],
                   transcribe_kwargs: dict[str, Any]) -> list[Any]:
    """Transcribe ``clips`` (one encoder call for the whole batch) and score them."""
    whisper = hasattr(model, "sot_sequence")
    enc_names = [m.hook_name for m in monitors if m.is_encoder]
    dec_mons = [m for m in monitors if not m.is_encoder]
    extra = ["encoder.hook_out"] if dec_mons and whisper else []
    cap = _Capture(enc_names + extra)
    with model.hooks(fwd_hooks=cap.hooks()):
        results = model.transcribe(list(clips), **transcribe_kwargs)
    n_samples = [len(c) for c in clips]
    rows: dict[tuple[str, str], torch.Tensor] = {}
    for m in monitors:
        if m.is_encoder and (m.hook_name, m.pooling) not in rows:
            x = flatten_positions(cap.acts[m.hook_name], m.hook_name)
            if x.shape[0] != len(clips):
                raise RuntimeError(f"{m.hook_name} saw a batch of {x.shape[0]}, expected {len(clips)}")
            lengths = [audio_frames(n, x.shape[1], window_samples(model)) for n in n_samples]
            rows[(m.hook_name, m.pooling)] = torch.cat(pool(x, lengths, m.pooling))

    if dec_mons:
        eos = model.cfg.eos_token_id  # as extract_activations: the probe's training rows end with it
        dec = _Capture([m.hook_name for m in dec_mons])
        per_clip: dict[str, list[torch.Tensor]] = {}
        if whisper:
            seqs = [list(r.prompt) + list(r.tokens) + [eos] for r in results]
            lengths = [len(s) for s in seqs]
            enc_out = cap.acts["encoder.hook_out"]
            ids = torch.full((len(seqs), max(lengths)), eos, dtype=torch.long, device=enc_out.device)
            for b, s in enumerate(seqs):
                ids[b, : len(s)] = torch.tensor(s, device=enc_out.device)
            with model.hooks(fwd_hooks=dec.hooks()):
                model(decoder_input_ids=ids, encoder_hidden_states=enc_out)  # causal: padding after eos is unread
            for m in dec_mons:
                if (m.hook_name, m.pooling) not in rows:
                    x = flatten_positions(dec.acts[m.hook_name], m.hook_name)
                    rows[(m.hook_name, m.pooling)] = torch.cat(pool(x, lengths, m.pooling))
        else:
            for clip, r in zip(clips, results):
                tf = model.teacher_forced_inputs(clip, continuation=list(r.tokens) + [eos])
                with model.hooks(fwd_hooks=dec.hooks()):
                    model(**tf.kwargs)
                for m in dec_mons:
                    x = flatten_positions(dec.acts[m.hook_name], m.hook_name)
                    per_clip.setdefault(f"{m.hook_name}|{m.pooling}", []).extend(pool(x, [x.shape[1]], m.pooling))
            for m in dec_mons:
                rows[(m.hook_name, m.pooling)] = torch.cat(per_clip[f"{m.hook_name}|{m.pooling}"])

    for m in monitors:
        scores, labels = m.score(rows[(m.hook_name, m.pooling)])
        for r, s, lab in zip(results, scores, labels):
            r.extra.setdefault("monitors", {})[m.name] = s
            r.extra.setdefault("monitor_labels", {})[m.name] = lab
    return results


def transcribe_with_monitors(model: Any, audio: Any, monitors: Sequence[ProbeMonitor] | ProbeMonitor,
                             **transcribe_kwargs: Any) -> Any:
    """``model.transcribe(audio, **transcribe_kwargs)`` with each monitor's score in
    ``result.extra["monitors"]``; a list of audio gives a list of results.

    The transcript is the same as without monitors (hooks only read). Whisper clips share
    one batch when they share a prompt (English-only models, or ``language`` given);
    otherwise, and for other models, clips run one at a time so each encoder call that a
    hook sees covers exactly one prompt group.
    """
    mons = [monitors] if isinstance(monitors, ProbeMonitor) else list(monitors)
    if not mons:
        raise ValueError("pass at least one ProbeMonitor")
    names = [m.name for m in mons]
    if len(set(names)) != len(names):
        raise ValueError(f"monitor names must be unique, got {names}")
    for m in mons:
        model.check_hook_name(m.hook_name)
    clips, is_batch = _as_clips(audio)
    one_prompt = hasattr(model, "sot_sequence") and (
        transcribe_kwargs.get("language") or not (model.cfg.is_multilingual and model.cfg.lang_to_id))
    if one_prompt:
        results = _monitor_batch(model, clips, mons, transcribe_kwargs)
    else:
        results = [r for c in clips for r in _monitor_batch(model, [c], mons, transcribe_kwargs)]
    return results if is_batch else results[0]


__all__ = ["ProbeMonitor", "transcribe_with_monitors"]
