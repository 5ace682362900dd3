"""Audio -> pooled rows: the one pipeline behind extraction (``extract_activations``) and
probe monitors (``transcribe_with_monitors``), so a probe trained on one reads the same
numbers on the other.

For a batch of clips and one pooling rule per hook (see :mod:`~hooked_asr.activations.pooling`):

1. Encoder hooks are read from the encoder pass that transcription runs anyway (or from one
   ``model.encode`` when no decoder hook is asked for), pooled over each clip's audio frames
   ``n = audio_frames(n_samples, T, window_samples(model))`` at the hook's resolution ``T``.
2. Decoder hooks read one teacher-forced pass over ``prompt + transcript + <|endoftext|>``
   per clip (``model.teacher_forced_inputs``). Why not during generation: greedy decoding
   stops when it *produces* end of text, so that token is never fed back and its residual
   never exists. The pass reuses the encoder: what the decoder reads is
   ``model.finish_encoder(encoder.blocks.{L-1}.hook_resid_post)``, captured in step 1.

One rule for when to go clip by clip: a batch runs together; when transcription split it
into groups (per detected language, per number of audio tokens), the encoder ran once per
group and the capture saw only the last one (its batch is not the number of clips), so the
batch is run again clip by clip. Nothing here depends on the model's type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hooked_asr.activations.pooling import flatten_positions, pool
from hooked_asr.audio import audio_frames, window_samples
from hooked_asr.hooks import act_name


Site = tuple[str, str]  # (hook name, pooling rule)


@dataclass
class Rows:
    """Pooled rows per ``(hook, rule)``, one tensor per clip (``[1, d]`` for ``mean`` /
    ``final``, every position for ``none``), and the transcripts when they were made."""

    rows: dict[Site, list[torch.Tensor]]
    results: list[Any] | None


class _Capture:
    """Forward hooks that keep the latest activation of each hook (detached): language
    detection runs the encoder before transcription does, and the latest pass is the one
    that transcribed."""

    def __init__(self, names: Sequence[str]):
        self.names = list(dict.fromkeys(names))
        self.acts: dict[str, torch.Tensor] = {}

    def hooks(self) -> list[tuple[str, Any]]:
        def grab(x: torch.Tensor, hook: Any) -> None:
            self.acts[hook.name] = x.detach()

        return [(n, grab) for n in self.names]


def _encoder_pass(
    model: Any, clips: list[np.ndarray], names: list[str], transcribe: bool, transcribe_kwargs: dict[str, Any]
) -> tuple[_Capture, list[Any] | None]:
    cap = _Capture(names)
    with model.hooks(fwd_hooks=cap.hooks()):
        if transcribe:
            results = model.transcribe(list(clips), **transcribe_kwargs)
        else:
            model.encode(
                **model.prepare_features(list(clips), allow_silence=transcribe_kwargs.get("allow_silence", False))
            )
            results = None
    return cap, results


def _decoder_rows(
    model: Any, clip: np.ndarray, result: Any, states: torch.Tensor, sites: list[Site], allow_silence: bool = False
) -> dict[Site, torch.Tensor]:
    """One teacher-forced pass over ``prompt + transcript + eos`` on the encoder output ``states``."""
    eos = int(model.cfg.eos_token_id)
    language = {"language": result.language} if result.language is not None else {}
    tf = model.teacher_forced_inputs(
        clip, continuation=list(result.tokens) + [eos], allow_silence=allow_silence, **language
    )
    if tf.tokens[0, : tf.prompt_len].tolist() != list(result.prompt):
        raise RuntimeError(
            f"the transcript's prompt {list(result.prompt)[:8]}... is not the teacher-forced prompt "
            f"{tf.tokens[0, : tf.prompt_len].tolist()[:8]}...: decoder rows must be read after the prompt the "
            "transcript was generated from; transcribe with the model's default prompt (no instruction/task)"
        )
    kwargs = {k: v for k, v in tf.kwargs.items() if k != "input_features"}
    dec = _Capture([h for h, _ in sites])
    with model.hooks(fwd_hooks=dec.hooks()):
        model(**kwargs, encoder_hidden_states=states)
    out = {}
    for h, rule in sites:
        x = flatten_positions(dec.acts[h], h)
        out[(h, rule)] = pool(x, [x.shape[1]], rule)[0]
    return out


@torch.no_grad()
def pooled_rows(
    model: Any,
    clips: Sequence[np.ndarray],
    pooling: Mapping[str, str] | Iterable[Site],
    transcribe: bool | None = None,
    **transcribe_kwargs: Any,
) -> Rows:
    """Pooled rows of every ``(hook, rule)`` in ``pooling`` (a mapping hook -> rule or pairs,
    rules already validated, e.g. by :func:`~hooked_asr.activations.extract.resolve_pooling`)
    for 16 kHz ``clips``.

    ``model.transcribe(clips, **transcribe_kwargs)`` runs when ``transcribe`` is true, or by
    default when a decoder hook is asked for; otherwise one ``model.encode`` pass. Every pass
    honours ``allow_silence`` from ``transcribe_kwargs`` (silent clips raise without it).
    """
    sites = list(dict.fromkeys(pooling.items() if isinstance(pooling, Mapping) else pooling))
    clips = [np.asarray(c, dtype=np.float32) for c in clips]
    if not clips:
        raise ValueError("no clips: pass at least one 1-D float array at 16 kHz")
    enc = [(h, p) for h, p in sites if h.startswith("encoder.")]
    dec = [(h, p) for h, p in sites if not h.startswith("encoder.")]
    transcribe = bool(dec) if transcribe is None else transcribe or bool(dec)
    last = act_name("resid_post", model.n_layers["encoder"] - 1, "encoder")
    names = [h for h, _ in enc] + ([last] if dec else [])
    cap, results = _encoder_pass(model, clips, names, transcribe, transcribe_kwargs)
    if len(clips) > 1 and any(x.shape[0] != len(clips) for x in cap.acts.values()):
        parts = [pooled_rows(model, [c], sites, transcribe, **transcribe_kwargs) for c in clips]
        return Rows(
            rows={s: [r for p in parts for r in p.rows[s]] for s in sites},
            results=[r for p in parts for r in p.results] if transcribe else None,
        )
    rows: dict[Site, list[torch.Tensor]] = {}
    for h, rule in enc:
        x = flatten_positions(cap.acts[h], h)
        lengths = [audio_frames(len(c), x.shape[1], window_samples(model)) for c in clips]
        rows[(h, rule)] = pool(x, lengths, rule)
    if dec:
        states = model.finish_encoder(cap.acts[last])
        silence = bool(transcribe_kwargs.get("allow_silence", False))
        per_clip = [
            _decoder_rows(model, c, r, states[b : b + 1], dec, silence) for b, (c, r) in enumerate(zip(clips, results))
        ]
        for s in dec:
            rows[s] = [p[s] for p in per_clip]
    return Rows(rows={s: rows[s] for s in sites}, results=results)


__all__ = ["Rows", "pooled_rows"]
