"""A memory estimate that guards decoding before it starts.

Decoding holds, per row (``batch * num_beams`` rows; ``best_of`` samples are rows too):

* the encoder output the row reads, ``n_audio * d_model`` values, and with cross-attention
  its keys and values in every decoder layer, ``2 * n_layers * n_audio * d_kv``;
* the self-attention cache, ``2 * n_layers * n_tokens * d_kv`` (``n_tokens``: prompt plus
  new tokens; Qwen2-Audio's audio tokens are part of its prompt);
* a step's logits and their log-softmax, ``~3 * d_vocab`` float32 values.

Measured when this was written (whisper tiny.en, CPU, 1-s clip): 22 MB of peak memory per beam
row; the estimate says 27 MB. ``beam_size=1000`` took 9.8 GB and 5000 was killed by the kernel at
18.7 GB: refused here, with the number of rows that fit.
"""

from __future__ import annotations

import os
from typing import Any

import torch

# Estimates above this share of the memory available are refused (the rest is the model,
# activations of one step, the allocator's slack).
_SHARE = 0.8


class DecodingMemoryError(MemoryError, ValueError):
    """Decoding would not fit in memory: a bad option (``beam_size``, batch), so also a ``ValueError``."""


def decoding_bytes_per_row(model: Any, n_tokens: int) -> int:
    """Estimated bytes one decoding row holds at its longest (see the module docstring)."""
    dec, enc = model.cfg.decoder, model.cfg.encoder
    elem = next(model.parameters()).element_size()
    d_kv = (dec.n_key_value_heads or dec.n_heads) * (dec.d_head_override or dec.d_model // dec.n_heads)
    n_audio = enc.n_ctx // (enc.pool_stride or 1)
    audio = n_audio * dec.d_model * elem
    if getattr(dec, "cross_attention", False):
        audio += 2 * dec.n_layers * n_audio * d_kv * elem
    self_kv = 2 * dec.n_layers * n_tokens * d_kv * elem
    logits = 3 * dec.d_vocab * 4
    return int(audio + self_kv + logits)


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
    model: Any, batch: int, num_beams: int, n_tokens: int, device: torch.device | str | None = None
) -> None:
    """Raise :class:`DecodingMemoryError` before decoding when ``batch * num_beams`` rows of ``n_tokens``
    tokens (prompt + new) are estimated to need more than the memory available, naming the
    estimate and the largest ``beam_size`` that fits."""
    rows = batch * num_beams
    if rows <= 1:
        return
    per_row = decoding_bytes_per_row(model, n_tokens)
    free = available_bytes(device if device is not None else model.device)
    if free is None or rows * per_row <= _SHARE * free:
        return
    fit = int(_SHARE * free // (per_row * batch))
    fix = (
        f"use a smaller beam_size (at most {fit} fit{'s' if fit == 1 else ''} with a batch of {batch})"
        if fit >= 1 and num_beams > 1
        else "decode fewer audio inputs at once (a smaller batch)"
    )
    raise DecodingMemoryError(
        f"decoding {batch} input{'s' if batch != 1 else ''} x beam_size={num_beams} = {rows} rows needs about "
        f"{rows * per_row / 1e9:.1f} GB ({per_row / 1e6:.0f} MB per row: the encoder output, cross-attention "
        f"keys/values and a cache of {n_tokens} tokens), but {free / 1e9:.1f} GB are available; {fix}"
    )


__all__ = ["DecodingMemoryError", "available_bytes", "check_decoding_memory", "decoding_bytes_per_row"]
