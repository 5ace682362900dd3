"""Probe monitors: score every transcript with linear probes as it is produced.

    >>> speech = ProbeMonitor("speech", speech_probe, "encoder.blocks.3.hook_resid_post")
    >>> halluc = ProbeMonitor("hallucination", halluc_probe, "decoder.blocks.3.hook_resid_post")
    >>> out = transcribe_with_monitors(model, audio, [speech, halluc])
    >>> out.text, out.extra["monitors"]        # {"speech": 0.98, "hallucination": 0.04}

A monitor reads its hook exactly as :func:`~hooked_asr.activations.extract_activations`
stores it (both call :func:`~hooked_asr.activations.rows.pooled_rows`), so a probe trained
on a store applies unchanged:

- encoder hooks (default ``mean``): captured during transcription's own encoder pass
  (no extra encoder work) and averaged over the clip's audio frames,
  ``a = (1/n) sum_{t<n} x[t]``, ``n = audio_frames(n_samples, T)``;
- decoder hooks (default ``final``): one teacher-forced decoder pass over
  ``prompt + transcript + <|endoftext|>`` after generation, reading the end-of-text
  position. Why not capture during generation: greedy decoding stops as soon as it
  *produces* end-of-text, so that token is never fed back and its residual never exists;
  the last generation step sees the last transcript token instead, a different position
  from the one the probe was trained on. The extra pass reuses the encoder output
  transcription computed and runs the decoder once over the sequence (with the KV cache
  generation ran it token by token), so it costs about one decoder forward per clip.

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

from hooked_asr.activations.pooling import default_pooling, normalise_pooling
from hooked_asr.activations.rows import pooled_rows
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
            raise ValueError(
                f"monitor {self.name!r}: pooling 'none' gives one row per position; a monitor needs "
                "one vector per clip ('mean' or, for decoder hooks, 'final')"
            )
        if self.probe.task == "classification":
            pos = self.probe.classes[-1] if self.positive is None else self.positive
            if pos not in self.probe.classes:
                raise ValueError(f"monitor {self.name!r}: positive class {pos!r} is not in {self.probe.classes}")
            self.positive = pos

    @property
    def key(self) -> tuple[str, str]:
        """``(hook_name, pooling)``: the rows this monitor reads."""
        return (self.hook_name, self.pooling)

    @torch.no_grad()
    def score(self, x: Float[torch.Tensor, "n d"]) -> tuple[list[float], list[Any]]:
        """Scores and predicted labels for pooled rows ``x``."""
        if x.shape[-1] != self.probe.d_in:
            raise ValueError(
                f"monitor {self.name!r}: {self.hook_name} gives {x.shape[-1]}-d vectors; "
                f"the probe reads {self.probe.d_in}"
            )
        if self.probe.task == "regression":
            pred = self.probe.predict(x).double().cpu().tolist()
            return pred, pred
        proba = self.probe.predict_proba(x)
        k = self.probe.classes.index(self.positive)
        labels = [self.probe.classes[i] for i in self.probe.predict_index(x).cpu().tolist()]
        return proba[:, k].double().cpu().tolist(), labels


def _as_clips(
    audio: Any, sampling_rate: int | None = None, allow_silence: bool = False
) -> tuple[list[np.ndarray], bool]:
    from hooked_asr.audio import load_audio

    if isinstance(audio, torch.Tensor) and audio.ndim == 3:
        raise ValueError(
            "monitors need raw audio (a path or 1-D array per clip), not log-mel features: encoder "
            "pooling averages over the clip's real frames, which the padded features do not tell"
        )
    if isinstance(audio, (list, tuple)):
        if not audio:
            raise ValueError("an empty list of audio was passed")
        return [load_audio(a, sampling_rate, allow_silence=allow_silence) for a in audio], True
    return [load_audio(audio, sampling_rate, allow_silence=allow_silence)], False


def _score(results: list[Any], rows: dict[str, list[torch.Tensor]], monitors: Sequence[ProbeMonitor]) -> None:
    for m in monitors:
        scores, labels = m.score(torch.cat(rows[m.key]))
        for r, s, lab in zip(results, scores, labels):
            r.extra.setdefault("monitors", {})[m.name] = s
            r.extra.setdefault("monitor_labels", {})[m.name] = lab


def transcribe_with_monitors(
    model: Any, audio: Any, monitors: Sequence[ProbeMonitor] | ProbeMonitor, **transcribe_kwargs: Any
) -> Any:
    """``model.transcribe(audio, **transcribe_kwargs)`` with each monitor's score in
    ``result.extra["monitors"]``; a list of audio gives a list of results.

    The transcript is the same as without monitors (hooks only read). Clips share one batch;
    when transcription splits it into prompt groups (detected languages, audio lengths), it
    is run again clip by clip (the rule of :func:`~hooked_asr.activations.rows.pooled_rows`).
    """
    mons = [monitors] if isinstance(monitors, ProbeMonitor) else list(monitors)
    if not mons:
        raise ValueError("pass at least one ProbeMonitor")
    names = [m.name for m in mons]
    if len(set(names)) != len(names):
        raise ValueError(f"monitor names must be unique, got {names}")
    for m in mons:
        model.check_hook_name(m.hook_name)
    clips, is_batch = _as_clips(
        audio, transcribe_kwargs.pop("sampling_rate", None), transcribe_kwargs.get("allow_silence", False)
    )
    got = pooled_rows(model, clips, [m.key for m in mons], transcribe=True, **transcribe_kwargs)
    _score(got.results, got.rows, mons)
    return got.results if is_batch else got.results[0]


__all__ = ["ProbeMonitor", "transcribe_with_monitors"]
