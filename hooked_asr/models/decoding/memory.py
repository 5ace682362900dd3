"""A memory estimate that guards decoding before it starts.

Decoding holds, per row (``batch * num_beams`` rows; ``best_of`` samples are rows too):

* the self-attention cache, ``2 * n_layers * n_tokens * d_kv`` (``n_tokens``: prompt plus
  new tokens; Qwen2-Audio's audio tokens are part of its prompt), three times over: its buffer
  grows by doubling and a beam reorder copies it;
* a step's scores: logits, log-softmax and the search's float32 working copies, measured at
  ~12 ``d_vocab``-sized float32 vectors per row (the first step reads two positions);

the unembedding's oneDNN-packed copy (float32 on the CPU, from 3 rows: ``d_vocab * d_model``
values, once); and, once per copy of the audio, the encoder output (``n_audio * d_model`` values) and with
cross-attention its keys and values in every decoder layer (``2 * n_layers * n_audio * d_kv``).
The beams of one audio share one copy when nothing in the model is hooked (the prompt runs once
and its cross-attention cache is a stride-0 view, :class:`~hooked_asr.models.decoding.search.Stepper`);
otherwise, and across several audio inputs, every row holds its own.

Measured (whisper tiny.en, CPU, 1-s clip, 20 new tokens, peak resident growth): no hook, 20 / 60 /
120 beams: 80 / 224 / 464 MB (3.8 MB a row); a hook on one block: 20 / 60 beams: 472 / 1393 MB
(23 MB a row). ``beam_size=5000`` was killed by the kernel at 18.7 GB: refused here, with the
number of rows that fit.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from hooked_asr.components.products import ONEDNN_MIN_ROWS

# Estimates above this share of the memory available are refused (the rest is the model,
# activations of one step, the allocator's slack).
_SHARE = 0.8


class DecodingMemoryError(MemoryError, ValueError):
    """Decoding would not fit in memory: a bad option (``beam_size``, batch), so also a ``ValueError``."""


def audio_bytes(model: Any) -> int:
    """Bytes of one copy of what decoding reads of an audio: the encoder output and, with
    cross-attention, every decoder layer's keys and values of it."""
    dec, enc = model.cfg.decoder, model.cfg.encoder
    elem = next(model.parameters()).element_size()
    n_audio = enc.n_ctx // (enc.pool_stride or 1)
    audio = n_audio * dec.d_model * elem
    if getattr(dec, "cross_attention", False):
        audio += 2 * dec.n_layers * n_audio * _d_kv(dec) * elem
    return int(audio)


def _d_kv(dec: Any) -> int:
    return (dec.n_key_value_heads or dec.n_heads) * (dec.d_head_override or dec.d_model // dec.n_heads)


def decoding_bytes_per_row(model: Any, n_tokens: int, shared_audio: bool = False) -> int:
    """Estimated bytes one decoding row holds at its longest (see the module docstring); with
    ``shared_audio`` the rows read one copy of the audio (counted by :func:`decoding_bytes`)."""
    dec = model.cfg.decoder
    elem = next(model.parameters()).element_size()
    self_kv = 3 * 2 * dec.n_layers * n_tokens * _d_kv(dec) * elem
    scores = 12 * dec.d_vocab * 4
    return int(self_kv + scores + (0 if shared_audio else audio_bytes(model)))


def packed_unembedding_bytes(model: Any, rows: int) -> int:
    """Bytes of the unembedding's oneDNN-packed copy that decoding ``rows >= 3`` float32 rows on the
    CPU keeps while it runs (``components.products``: the same products, twice as fast)."""
    p = next(model.parameters())
    if rows < ONEDNN_MIN_ROWS or p.dtype != torch.float32 or p.device.type != "cpu":
        return 0
    return model.cfg.decoder.d_vocab * model.cfg.decoder.d_model * 4


def decoding_bytes(model: Any, rows: int, n_tokens: int, shared_audio: bool = False) -> int:
    """Estimated bytes of decoding ``rows`` rows of ``n_tokens`` tokens."""
    return (
        rows * decoding_bytes_per_row(model, n_tokens, shared_audio)
        + (audio_bytes(model) if shared_audio else 0)
        + packed_unembedding_bytes(model, rows)
    )


def available_bytes(device: torch.device | str) -> int | None:
    """Memory free for new tensors on ``device``: CUDA's free memory, or the host's
    ``MemAvailable`` (Linux); ``None`` when unknown (the guard then lets decoding run)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_decoding_memory(
    model: Any,
    batch: int,
    num_beams: int,
    n_tokens: int,
    device: torch.device | str | None = None,
    shared_audio: bool = False,
) -> None:
    """Raise :class:`DecodingMemoryError` before decoding when ``batch * num_beams`` rows of ``n_tokens``
    tokens (prompt + new) are estimated to need more than the memory available, naming the
    estimate and the largest ``beam_size`` that fits. ``shared_audio``: the beams read one copy of
    the audio (one input, no hook)."""
    rows = batch * num_beams
    if rows <= 1:
        return
    total = decoding_bytes(model, rows, n_tokens, shared_audio)
    free = available_bytes(device if device is not None else model.device)
    if free is None or total <= _SHARE * free:
        return
    per_row = decoding_bytes_per_row(model, n_tokens, shared_audio)
    shared = total - rows * per_row
    fit = int((_SHARE * free - shared) // (per_row * batch))
    fix = (
        f"use a smaller beam_size (at most {fit} fit{'s' if fit == 1 else ''} with a batch of {batch})"
        if fit >= 1 and num_beams > 1
        else "decode fewer audio inputs at once (a smaller batch)"
    )
    raise DecodingMemoryError(
        f"decoding {batch} input{'s' if batch != 1 else ''} x beam_size={num_beams} = {rows} rows needs about "
        f"{total / 1e9:.1f} GB ({per_row / 1e6:.0f} MB per row: a cache of {n_tokens} tokens, "
        f"the scores{'' if shared_audio else ', the encoder output and cross-attention keys/values'}), but "
        f"{free / 1e9:.1f} GB are available; {fix}"
    )


__all__ = [
    "DecodingMemoryError",
    "audio_bytes",
    "available_bytes",
    "check_decoding_memory",
    "decoding_bytes",
    "decoding_bytes_per_row",
    "packed_unembedding_bytes",
]
