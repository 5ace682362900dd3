"""Reference inputs for patching: what ``a_ref`` is recorded from.

Whisper pads every input to 30 s, so a reference of the *same length* as the target
keeps the padded region identical and only the speech region differs.

    white_noise_like(audio, seed=0)            # N(0, 1) scaled to the target's RMS
    white_noise_like(audio, seed=0, rms_level=0.01)  # a fixed RMS
    silence_like(audio)                        # zeros
    other_utterance(audio, other, align=...)   # another recording, cut or zero-padded to the same length

One prompt for clean and reference runs. A reference run is compared with the clean run position by
position, so it must read the same decoder tokens: the clean run's prompt (language, task, timestamp
mode, previous text) and continuation. Building the reference's inputs with
``model.teacher_forced_inputs(noise, tokens)`` does not give that on a multilingual model: the
language is detected on the *noise* (``<|nn|>`` where the speech is ``<|en|>``), so every reference
activation comes from another prompt. Every method that takes a reference (sweeps, attribution
patching, path patching, EAP / EAP-IG, circuits) goes through :func:`reference_cache`, which

* builds a reference given as audio with the clean run's own decoder inputs (:func:`reference_inputs`:
  the clean ``target_kwargs`` with the audio features replaced), and
* refuses reference inputs or a recorded :class:`ReferenceCache` whose decoder tokens differ from the
  clean run's, naming both prompts, unless the caller chose other tokens explicitly
  (``reference_inputs(..., tokens=...)``).

    >>> ref = reference_inputs(model, tf.kwargs, white_noise_like(audio))      # the clean prompt, noise audio
    >>> cache = reference_cache(model, tf.kwargs, white_noise_like(audio), hooks)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int

from hooked_asr.datasets.nonspeech import rms, white_noise_like  # the generators; patching's door to them


def _as_wave(audio: Any) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"references are built from 1-D audio at 16 kHz, got shape {a.shape}")
    return a


def silence_like(audio: Float[np.ndarray, "samples"]) -> Float[np.ndarray, "samples"]:
    """Zeros of the same length (log-mel of silence is the constant floor); a patching reference
    "like" the target (:func:`hooked_asr.datasets.silence` makes a clip of a given length)."""
    return np.zeros_like(_as_wave(audio))


def other_utterance(
    audio: Float[np.ndarray, "samples"], other: Float[np.ndarray, "samples2"], align: Literal["cut", "keep"] = "cut"
) -> Float[np.ndarray, "samples"]:
    """Another recording as the reference. ``align='cut'`` cuts or zero-pads it to the
    target's length; ``'keep'`` returns it unchanged (positions may then differ: patching
    handles that with its ``missing=`` policy)."""
    a, o = _as_wave(audio), _as_wave(other)
    if align == "keep":
        return o
    if align != "cut":
        raise ValueError(f"align must be 'cut' or 'keep', got {align!r}")
    out = np.zeros_like(a)
    out[: min(a.size, o.size)] = o[: a.size]
    return out


def make_reference(kind: str, audio: Any, seed: int = 0, other: Any = None, rms_match: bool = True) -> np.ndarray:
    """``kind`` in ``noise``, ``silence``, ``other`` (needs ``other``)."""
    if kind in ("noise", "white_noise"):
        return white_noise_like(audio, seed=seed, rms_match=rms_match)
    if kind == "silence":
        return silence_like(audio)
    if kind == "other":
        if other is None:
            raise ValueError(
                "reference kind 'other' needs the other utterance: make_reference('other', audio, other=...)"
            )
        return other_utterance(audio, other)
    raise ValueError(f"unknown reference kind {kind!r}; use 'noise', 'silence' or 'other'")


# ---- one prompt for clean and reference runs ----------------------------------------------------
TOKEN_KEYS = ("decoder_input_ids", "input_ids")  # Whisper's decoder tokens; Qwen2-Audio's whole sequence


class ReferenceInputs(dict):
    """A reference run's forward kwargs (a dict) that remembers whether its decoder tokens were chosen
    explicitly (``explicit_prompt``): then they may differ from the clean run's."""

    explicit_prompt: bool = False


class ReferenceCache(dict):
    """Hook name -> activation of a reference run, with the decoder tokens that run read (``tokens``
    ``[batch, pos]``, None when unknown) and whether they were chosen explicitly (``explicit_prompt``)."""

    tokens: torch.Tensor | None = None
    explicit_prompt: bool = False

    @classmethod
    def of(
        cls, acts: Mapping[str, torch.Tensor], tokens: torch.Tensor | None, explicit_prompt: bool = False
    ) -> "ReferenceCache":
        out = cls(acts)
        out.tokens = None if tokens is None else tokens.detach().cpu()
        out.explicit_prompt = bool(explicit_prompt)
        return out


def decoder_tokens(kwargs: Mapping[str, Any]) -> Int[torch.Tensor, "batch pos"] | None:
    """The decoder tokens of forward kwargs (``decoder_input_ids`` / ``input_ids``), or None."""
    for k in TOKEN_KEYS:
        v = kwargs.get(k)
        if isinstance(v, torch.Tensor):
            return v
    return None


def is_reference_cache(reference: Any) -> bool:
    """A recorded cache (hook names as keys), not forward kwargs nor audio."""
    return isinstance(reference, Mapping) and any(isinstance(k, str) and ".hook_" in k for k in reference)


def _str_tokens(model: Any, ids: Sequence[int]) -> list[str]:
    try:
        return list(model.to_str_tokens(torch.tensor(list(ids), dtype=torch.long), prepend_bos=False))
    except Exception:  # no tokenizer (random test models): the ids say it
        return [f"<{i}>" for i in ids]


def _prompt_text(model: Any, ids: list[int], upto: int) -> str:
    return "".join(_str_tokens(model, ids[:upto])) + ("..." if upto < len(ids) else "")


def check_reference_prompt(model: Any, target_kwargs: Mapping[str, Any], reference: Any) -> None:
    """Refuse a reference (forward kwargs or a :class:`ReferenceCache`) whose decoder tokens differ from
    the clean run's ``target_kwargs``, naming both prompts. Passes when either side's tokens are unknown
    (a hand-built cache) or the reference's tokens were chosen explicitly."""
    if getattr(reference, "explicit_prompt", False):
        return
    ref = (
        reference.tokens
        if isinstance(reference, ReferenceCache)
        else (decoder_tokens(reference) if isinstance(reference, Mapping) else None)
    )
    clean = decoder_tokens(target_kwargs)
    if ref is None or clean is None:
        return
    ref, clean = ref.detach().cpu(), clean.detach().cpu()
    rows = clean if ref.shape[0] == 1 else clean[: ref.shape[0]]
    if ref.shape[0] not in (1, clean.shape[0]) or ref.shape[1] != clean.shape[1]:
        same = False
    else:
        same = bool((ref.expand_as(rows) == rows).all())
    if same:
        return
    r, c = ref[0].tolist(), clean[0].tolist()
    diff = next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), min(len(r), len(c)))
    special = [s.startswith("<|") and s.endswith("|>") for s in _str_tokens(model, c[:16])]
    n_prompt = next((i for i, sp in enumerate(special) if not sp), len(special))
    upto = min(max(diff + 1, n_prompt), 24)
    where = f"position {diff}" + (" (in the prompt)" if diff < n_prompt else " (in the continuation)")
    raise ValueError(
        f"the reference run's decoder tokens differ from the clean run's at {where}: reference "
        f"{_prompt_text(model, r, upto)!r} ({len(r)} tokens), clean {_prompt_text(model, c, upto)!r} "
        f"({len(c)} tokens). A reference must run with the clean prompt (language, task, timestamps, previous "
        f"text) and tokens: pass the reference audio itself, or build its inputs with "
        f"hooked_asr.patching.reference_inputs(model, clean_kwargs, audio) (to use other tokens on purpose: "
        f"reference_inputs(..., tokens=...))"
    )


def reference_inputs(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Any,
    *,
    audio: Any = None,
    seed: int = 0,
    tokens: Int[torch.Tensor, "batch pos"] | Sequence[int] | None = None,
) -> ReferenceInputs:
    """The reference run's forward kwargs: the clean run's ``target_kwargs`` (so its decoder tokens:
    prompt and continuation) with the audio features of ``reference`` in place of the clean ones.

    ``reference``: a path or 1-D 16 kHz array, log-mel features ``[1, n_mels, frames]``, or a kind
    ``'noise'`` / ``'silence'`` built from ``audio`` (the clean waveform; :func:`make_reference`, ``seed``).
    ``tokens``: other decoder tokens, chosen explicitly (``[batch, pos]`` or one sequence): the result is
    then marked ``explicit_prompt`` and no method refuses it. A model whose prompt depends on the audio's
    length (Qwen2-Audio counts audio tokens) needs a reference of the clean audio's length.
    """
    if isinstance(reference, str) and reference in ("noise", "white_noise", "silence"):
        if audio is None:
            raise ValueError(f"reference={reference!r} is built from the clean audio: pass audio=<1-D 16 kHz array>")
        reference = make_reference(reference, audio, seed=seed)
    feats = model.prepare_features(reference, allow_silence=True)
    clean_tokens = decoder_tokens(target_kwargs)
    n = clean_tokens.shape[0] if clean_tokens is not None else 1
    out = ReferenceInputs(target_kwargs)
    for k, v in feats.items():
        if isinstance(v, torch.Tensor) and v.shape[0] == 1 and n > 1:
            v = v.expand(n, *v.shape[1:])
        out[k] = v
    if "feature_attention_mask" in feats and isinstance(target_kwargs.get("feature_attention_mask"), torch.Tensor):
        a = int(feats["feature_attention_mask"][0].sum())
        b = int(target_kwargs["feature_attention_mask"][0].sum())
        if a != b and tokens is None:
            raise ValueError(
                f"the reference audio has {a} feature frames, the clean audio {b}: this model's prompt counts "
                f"audio tokens, so the prompt would differ; cut or pad the reference to the clean length "
                f"(hooked_asr.patching.other_utterance(clean_audio, reference))"
            )
    if tokens is not None:
        t = torch.as_tensor(tokens, dtype=torch.long)
        t = (t[None] if t.ndim == 1 else t).to(clean_tokens.device if clean_tokens is not None else model.device)
        key = next((k for k in TOKEN_KEYS if k in target_kwargs), TOKEN_KEYS[0])
        out[key] = t
        out.explicit_prompt = True
    return out


def reference_cache(
    model: Any,
    target_kwargs: Mapping[str, Any],
    reference: Any,
    hooks: Iterable[str],
    reference_is_cache: bool | None = None,
    **reference_kwargs: Any,
) -> ReferenceCache:
    """The one place every method gets its reference activations at ``hooks`` from.

    ``reference``: a recorded cache (checked, returned), forward kwargs (checked, then run), or audio /
    a kind (run with the clean decoder tokens, :func:`reference_inputs`; ``reference_kwargs`` go there).
    ``reference_is_cache`` forces the cache reading (None: told apart by the keys). A cache or kwargs whose
    decoder tokens differ from ``target_kwargs``'s are refused (:func:`check_reference_prompt`).
    """
    from hooked_asr.patching.interventions import record_reference

    hooks = list(dict.fromkeys(hooks))
    if reference_is_cache or (reference_is_cache is None and is_reference_cache(reference)):
        missing = [h for h in hooks if h not in reference]
        if missing:
            raise KeyError(
                f"the reference cache lacks {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                f"record it at those hooks (hooked_asr.patching.record_reference)"
            )
        check_reference_prompt(model, target_kwargs, reference)
        if isinstance(reference, ReferenceCache):
            return reference
        return ReferenceCache.of(reference, None)
    if not (isinstance(reference, Mapping) and decoder_tokens(reference) is not None):
        reference = reference_inputs(model, target_kwargs, reference, **reference_kwargs)
    check_reference_prompt(model, target_kwargs, reference)
    return record_reference(model, reference, hooks)


__all__ = [
    "ReferenceCache",
    "ReferenceInputs",
    "check_reference_prompt",
    "decoder_tokens",
    "is_reference_cache",
    "make_reference",
    "other_utterance",
    "reference_cache",
    "reference_inputs",
    "silence_like",
]
