"""What a live session keeps of its clean run, so that an action recomputes only what it changes:
the encoder's output and the residual entering its blocks (an intervention in the decoder reuses the
clean encoder output; one in encoder block ``l`` reruns blocks ``l..`` from the clean
``encoder.blocks.{l}.hook_resid_pre``, :meth:`model.encode(resid, start_at_layer=l)
<hooked_asr.models.base.HookedEncoderDecoder.encode>`), and the reference activations of ``mean``,
``noise`` and ``other`` per hook (the last through :func:`hooked_asr.patching.reference_cache`, so the
reference run reads the clean prompt and tokens)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hooked_asr.explore.live_export import NOISE_SEED
from hooked_asr.hooks import block_of
from hooked_asr.patching.references import TOKEN_KEYS


class CleanRun:
    """One window's clean run: ``tf`` (its ``TeacherForcedInputs``), the encoder output, and references."""

    def __init__(self, model: Any, wave: Float[np.ndarray, "samples"], tf: Any, language: dict[str, Any]):
        self.model, self.wave, self.tf, self.language = model, wave, tf, language
        self.features = {k: v for k, v in tf.kwargs.items() if k not in TOKEN_KEYS}
        with torch.no_grad():
            self.encoder_out = model.encode(**self.features)
        self._resid: dict[int, torch.Tensor] = {}
        self.refs: dict[str, dict[str, torch.Tensor]] = {"mean": {}, "noise": {}, "other": {}}
        self.other_wave: np.ndarray | None = None

    # ---- the encoder ------------------------------------------------------------------------
    def first_block(self, hooks: Iterable[str]) -> int | None:
        """The lowest encoder block ``hooks`` touch (0 for a hook before the blocks or after them,
        which reruns the encoder whole), None when they are all in the decoder."""
        start = None
        for h in hooks:
            if h.startswith("decoder."):
                continue
            b = block_of(h)
            layer = b[1] if b is not None and b[0] == "encoder" else 0
            start = layer if start is None else min(start, layer)
        return start

    @torch.no_grad()
    def encoder_output(self, hooks: Iterable[str]) -> torch.Tensor:
        """What the decoder reads with the hooks now live at ``hooks``: the clean output when none is in
        the encoder, else the encoder rerun from the lowest block touched."""
        start = self.first_block(hooks)
        if start is None:
            return self.encoder_out
        if start == 0:
            return self.model.encode(**self.features)
        if start not in self._resid:  # the clean residual entering block `start`, computed once
            self._resid[start] = self.model.encode(**self.features, stop_at_layer=start)
        rest = {k: v for k, v in self.features.items() if k != "input_features"}  # Qwen2-Audio's feature mask
        return self.model.encode(self._resid[start], start_at_layer=start, **rest)

    def forward_kwargs(self, hooks: Iterable[str]) -> dict[str, Any]:
        """``model(**kwargs)`` of the teacher-forced run with the encoder output precomputed as above."""
        return {**self.tf.kwargs, "encoder_hidden_states": self.encoder_output(hooks)}

    # ---- references ---------------------------------------------------------------------------
    def set_other(self, other: Float[np.ndarray, "samples"] | None) -> None:
        self.other_wave = other
        self.refs["other"] = {}

    @torch.no_grad()
    def references(self, method: str, hooks: Iterable[str]) -> Mapping[str, torch.Tensor]:
        """``method``'s reference at ``hooks`` (each hook recorded once per window; the missing ones in one run):
        ``mean``: the clip's mean over every position; ``noise``: the run on white noise at the clip's RMS
        (seed ``NOISE_SEED``) forced on the clean transcript; ``other``: the run on the other clip cut or
        zero-padded to this clip's length (encoder frames aligned, 20 ms each) with the clean prompt and
        transcript (:func:`~hooked_asr.patching.reference_cache`)."""
        from hooked_asr.patching import mean_activations, record_reference, reference_cache
        from hooked_asr.datasets.nonspeech import white_noise_like
        from hooked_asr.patching.references import other_utterance

        store = self.refs[method]
        missing = [h for h in dict.fromkeys(hooks) if h not in store]
        if missing:
            if method == "mean":
                store.update(mean_activations(self.model, [self.tf.kwargs], missing))
            elif method == "noise":
                noise = white_noise_like(self.wave, seed=NOISE_SEED)
                steps = self.tf.tokens[0, self.tf.prompt_len :].tolist()
                kw = self.model.teacher_forced_inputs(
                    noise, continuation=steps, allow_silence=True, **self.language
                ).kwargs
                store.update(record_reference(self.model, kw, missing))
            else:
                if self.other_wave is None:
                    raise ValueError("no other clip: session.set_other(audio) first")
                aligned = other_utterance(self.wave, self.other_wave)
                store.update(reference_cache(self.model, self.tf.kwargs, aligned, missing))
        return store


__all__ = ["CleanRun"]
