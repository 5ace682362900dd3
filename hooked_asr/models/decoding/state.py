"""What a hook can read about the decoding that is running: ``model.decoding_state``.

Hooks receive tensors only; a hook that needs to know *which* decoding produced them (which
long-form window, which temperature-fallback retry, which step, how many beams share the
batch) reads ``model.decoding_state`` inside the hook. It is ``None`` outside ``generate`` /
``transcribe`` (e.g. a teacher-forced forward).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DecodingState:
    """Live counters of the running decoding, updated in place before every decoder call.

    ``window``: index of the 30-s window (0 for short-form audio); ``seek``: its first mel frame
    in the whole recording (100 frames per second); ``temperature`` and ``retry`` (0 for the
    first try, ``k`` for the ``k``-th fallback temperature); ``step``: the generated-token index
    that the decoder call predicts (0 runs the whole prompt); ``num_beams``: beams per audio,
    so the decoder's batch rows are ``batch * num_beams`` (row ``b * num_beams + k`` is beam ``k``
    of item ``b``); ``rows``: that batch size; ``n_windows``: windows so far (long-form only).
    """

    window: int = 0
    seek: int = 0
    temperature: float = 0.0
    retry: int = 0
    step: int = 0
    num_beams: int = 1
    rows: int = 0
    n_windows: int = 1


__all__ = ["DecodingState"]
