"""Whisper's timestamp-token rules and the segments they delimit.

The rules are openai-whisper's ``ApplyTimestampRules`` (= Hugging Face's
``WhisperTimeStampLogitsProcessor``), applied to a batch of rows at once. With ``ts`` the
timestamp tokens (``<|0.00|>`` = ``<|notimestamps|>`` + 1, 0.02 s apart) and ``seq`` a row's
tokens generated so far:

* ``<|notimestamps|>`` is never generated;
* after a pair of timestamps (or one at the very start) the next token is text;
  after a single timestamp it is a timestamp or end of text (timestamps come in pairs);
* timestamps never decrease, and a segment's end is strictly after its start;
* the first token is a timestamp no later than ``max_initial_timestamp_index`` (1.0 s);
* when the total probability of the timestamps beats every single text token, a timestamp
  is forced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hooked_asr.audio import TIME_PRECISION


@dataclass
class TimestampRules:
    timestamp_begin: int
    no_timestamps: int
    eos: int
    max_initial_timestamp_index: int | None = 50

    def apply(self, scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Mask ``scores [rows, vocab]`` (logits or log-probs; masked entries become ``-inf``)
        given each row's ``generated [rows, t]`` tokens after the prompt."""
        return self._apply(scores, generated, log_probs=False)[0]

    def apply_with_log_probs(self, scores: torch.Tensor, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`apply`, and ``log_softmax`` of its result (float32) for a caller that needs both:
        the rule that forces a timestamp already computes it, so it is reused for the rows the rule
        leaves alone and recomputed for the others (row by row the same numbers as one
        ``log_softmax`` of the masked scores)."""
        return self._apply(scores, generated, log_probs=True)

    def _apply(
        self, scores: torch.Tensor, generated: torch.Tensor, log_probs: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # log_probs=False: the forced rows' log-probs are left stale (apply does not return them)
        tb, neg = self.timestamp_begin, float("-inf")
        scores[:, self.no_timestamps] = neg
        t = generated.shape[1]
        if t == 0:
            scores[:, :tb] = neg
            if self.max_initial_timestamp_index is not None:
                scores[:, tb + self.max_initial_timestamp_index + 1 :] = neg
        else:
            # the timestamp columns (~1.5k) masked with a broadcast masked_fill_; the text columns (~50k)
            # written only in the rows a rule picks (_mask_rows)
            is_ts = generated >= tb
            last = is_ts[:, -1]
            penult = is_ts[:, -2] if t >= 2 else torch.ones_like(last)
            timestamps = scores[:, tb:]
            text_only = last & penult  # a closed pair: text must follow
            timestamps.masked_fill_(text_only[:, None], neg)
            ts_only = last & ~penult  # an open segment: close it or end
            _mask_rows(scores, ts_only, self.eos)
            # timestamps never decrease; a segment gets a nonzero length
            last_ts = torch.where(is_ts, generated, torch.full_like(generated, -1)).amax(1)
            lowest = torch.where(ts_only, last_ts, last_ts + 1)
            lowest = torch.where(last_ts >= 0, lowest, torch.full_like(lowest, tb))
            offsets = torch.arange(timestamps.shape[-1], device=scores.device)
            timestamps.masked_fill_(offsets[None] < (lowest - tb)[:, None], neg)
        logprobs = F.log_softmax(scores.float(), dim=-1)
        ts_mass = logprobs[:, tb:].logsumexp(-1)
        best_text = logprobs[:, :tb].amax(-1)  # amax: max's indices cost 10x the values over a strided row
        forced = ts_mass > best_text
        rows = _mask_rows(scores, forced, tb)
        if log_probs and len(rows):
            logprobs[rows] = F.log_softmax(scores[rows].float(), dim=-1)
        return scores, logprobs


def _mask_rows(scores: torch.Tensor, rows: torch.Tensor, end: int) -> torch.Tensor:
    """``scores[r, :end] = -inf`` for the rows where ``rows`` is true (returns their indices): only
    those rows are written, where a broadcast ``masked_fill_`` reads and writes every row's ~50k
    entries at each step of a search, most of them for rows the rule leaves alone."""
    idx = rows.nonzero()[:, 0]
    if len(idx):
        scores[idx, :end] = float("-inf")
    return idx


def split_segments(tokens: list[int], timestamp_begin: int) -> tuple[list[tuple[int, int, float, float]], bool, bool]:
    """Segments of one window's ``tokens`` as openai-whisper cuts them:
    ``([(token_from, token_to, start_s, end_s), ...], single_timestamp_ending, paired)``, times
    relative to the window; ``paired``: the window holds two consecutive timestamps. A window with no consecutive timestamps is one segment (end ``nan`` when it
    carries no timestamp at all: the caller uses the window's duration)."""
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not consecutive:
        stamps = [t for t, s in zip(tokens, is_ts) if s]
        end = (
            (stamps[-1] - timestamp_begin) * TIME_PRECISION
            if stamps and stamps[-1] != timestamp_begin
            else float("nan")
        )
        return [(0, len(tokens), 0.0, end)], single_ending, False
    slices = consecutive + ([len(tokens)] if single_ending else [])
    out, last = [], 0
    for cut in slices:
        piece = tokens[last:cut]
        out.append(
            (last, cut, (piece[0] - timestamp_begin) * TIME_PRECISION, (piece[-1] - timestamp_begin) * TIME_PRECISION)
        )
        last = cut
    return out, single_ending, True


__all__ = ["TimestampRules", "split_segments"]
