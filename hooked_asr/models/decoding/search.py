"""Token search with every hook live: greedy, sampling and beam search over one decoder.

Each step calls the model's decoder once for all rows (``batch`` rows, or ``batch * num_beams``
with beams), so every hook fires at every step of every search. The token rules (suppression,
suppression at the first step, Whisper's timestamp rules) are built once per call as masks.

* greedy: ``token_t = argmax_s rules(logits_t)[s]``, ``logprob_t = log_softmax(rules(logits_t))[token_t]``;
* sampling: ``token_t ~ softmax(rules(logits_t) / T)`` (log-probs as greedy's, at ``T = 1``);
* beam search, two algorithms:

  - :func:`openai_beam_search`, what ``transcribe`` runs (openai-whisper's ``BeamSearchDecoder``):
    log-probs ``log_softmax(rules(logits_t))`` (renormalised after suppression), ``beam_size + 1``
    candidates per beam, every candidate ending in end-of-text collected per audio until
    ``round(beam_size * patience)`` are finished, the winner picked by :func:`rank_sequences`
    (openai-whisper's ``MaximumLikelihoodRanker``);
  - :func:`beam_search`, what ``generate(num_beams=k)`` runs (Hugging Face's algorithm:
    ``2 * num_beams`` candidates per step, a finished hypothesis scores ``sum log p / n ** length_penalty``
    with ``n`` counting its end of text, HF's early-stopping heuristic, log-probs
    ``rules(log_softmax(logits_t))`` as HF ranks beams), token for token HF's ``num_beams``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hooked_asr.models.decoding.results import GenerationOutput
from hooked_asr.models.decoding.state import DecodingState
from hooked_asr.models.decoding.timestamps import TimestampRules


@dataclass
class LogitRules:
    """openai-whisper's logit filters, applied to every step's scores ``[rows, vocab]`` (``-inf`` where
    not allowed): ``SuppressTokens`` (``suppress``, every step), ``SuppressBlank`` (``begin``: blank and
    end of text at the first step) and ``ApplyTimestampRules`` (``timestamps``, see :mod:`.timestamps`).

    Applied as an additive bias (``0`` allowed, ``-inf`` not), built once: the same numbers as a
    ``masked_fill`` of finite scores in one pass instead of two (~2x faster per step at 32 rows)."""

    suppress: torch.Tensor  # [vocab] bool, every step
    begin: torch.Tensor  # [vocab] bool, the first step (suppress | begin_suppress_tokens)
    timestamps: TimestampRules | None = None

    def __post_init__(self) -> None:
        self._suppress_bias, self._begin_bias = (
            torch.zeros(m.shape, device=m.device).masked_fill(m, float("-inf")) for m in (self.suppress, self.begin)
        )

    @classmethod
    def build(
        cls,
        vocab: int,
        device: torch.device,
        suppress: Sequence[int],
        begin: Sequence[int],
        timestamps: TimestampRules | None = None,
    ) -> "LogitRules":
        s = torch.zeros(vocab, dtype=torch.bool, device=device)
        s[[t for t in suppress if 0 <= t < vocab]] = True
        b = s.clone()
        b[[t for t in begin if 0 <= t < vocab]] = True
        return cls(s, b, timestamps)

    def _suppressed(self, scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """``scores`` plus the suppression bias of this step (the first step's, or every step's)."""
        return scores + (self._begin_bias if generated.shape[1] == 0 else self._suppress_bias).to(scores.dtype)

    def apply(self, scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        scores = self._suppressed(scores, generated)
        if self.timestamps is not None:
            scores = self.timestamps.apply(scores, generated)
        return scores

    def apply_with_log_probs(self, scores: torch.Tensor, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(apply(scores), log_softmax(apply(scores)))`` in float32, with the timestamp rule's own
        ``log_softmax`` reused where it applies (one pass over the vocabulary fewer per step)."""
        scores = self._suppressed(scores, generated)
        if self.timestamps is not None:
            return self.timestamps.apply_with_log_probs(scores, generated)
        return scores, F.log_softmax(scores.float(), dim=-1)


class Stepper:
    """Runs the decoder one step at a time through ``model._decode_step`` and keeps the cache.

    ``use_cache=False`` reruns the whole sequence every step (hooks then see every position).
    ``group``: rows come in groups of that many beams of one audio with one prompt; with no hook
    anywhere in the model, the first step (the prompt) runs once per audio and its cache is
    shared by the group's beams (same numbers as running every beam: the rows are identical)."""

    def __init__(self, model: Any, context: Any, use_cache: bool, group: int = 1):
        self.model, self.context, self.use_cache, self.group = model, context, use_cache, group
        self.cache: Any = None
        self._cross_shared: bool | None = None

    def __call__(self, seq: torch.Tensor, at: Sequence[int] | None = None) -> torch.Tensor:
        """Logits ``[rows, pos, vocab]`` of the positions run this step; with ``at``, only at
        those positions of ``seq`` (``[rows, len(at), vocab]``; the rest are not computed
        unless ``decoder.hook_logits`` is live)."""
        if self.use_cache and self.cache is not None:
            ids = seq[:, -1:]
        else:
            ids = seq
        # positions of the ones run this step (a cached step runs the last position only)
        at_run = None if at is None else positions_from_end(at, seq.shape[1])
        if at_run is not None and any(a < -ids.shape[1] for a in at_run):
            raise ValueError(f"positions {list(at)} were not run this step ({ids.shape[1]} of {seq.shape[1]})")
        select = getattr(self.model.decoder, "logits_only_at", None) if at_run is not None else None
        with select(at_run) if select is not None else contextlib.nullcontext():
            if self.use_cache and self.cache is not None:
                logits, self.cache = self.model._decode_step(self.context, ids, self.cache)
            elif self.use_cache and self.group > 1 and not any_hook(self.model):
                logits, self.cache = self._prompt_once_per_group(ids)
            else:
                logits, cache = self.model._decode_step(self.context, ids, None)
                self.cache = cache if self.use_cache else None
        if at_run is not None and logits.shape[1] != len(at_run):  # hook_logits was live: all positions
            logits = logits[:, at_run]
        return logits

    def _prompt_once_per_group(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The first step for one row per group, its logits and cache repeated for the group's rows
        (cross-attention keys/values of a single audio as a stride-0 view, read once per step)."""
        rows, g = ids.shape[0], self.group
        if rows % g or not torch.equal(ids.view(rows // g, g, -1), ids[::g, None].expand(-1, g, -1)):
            logits, cache = self.model._decode_step(self.context, ids, None)
            return logits, cache
        first = torch.arange(0, rows, g, device=ids.device)
        logits, cache = self.model._decode_step(self.model._select_context(self.context, first), ids[::g], None)
        n = rows // g

        def spread(t: torch.Tensor) -> torch.Tensor:
            return t.expand(g, *t.shape[1:]) if n == 1 else t.repeat_interleave(g, dim=0)

        out = [{kind: (spread(k), spread(v)) for kind, (k, v) in layer.items()} for layer in cache]
        # self-attention keys/values are appended to at every step: each row gets its own copy
        for layer in out:
            if "self" in layer:
                layer["self"] = tuple(t.contiguous() for t in layer["self"])
        return logits.repeat_interleave(g, dim=0), out

    def reorder(self, rows: torch.Tensor, group: int) -> None:
        """Keep rows ``rows`` (beam search: the parent beam of each new beam; rows never leave
        their item's ``group`` of beams)."""
        if not self.use_cache:
            self.context = self.model._select_context(self.context, rows)
            return
        from hooked_asr.components.decoder import reorder_cache

        if self._cross_shared is None:
            # Cross-attention keys/values are computed once from one audio per item; unless a
            # hook made them differ between an item's beams, reordering them is a no-op copy.
            self._cross_shared = all(
                _beams_share(t, group) for layer in self.cache if "cross" in layer for t in layer["cross"]
            )
            if self._cross_shared and len(rows) == group:
                # One audio: every beam reads the same keys/values, so keep one row and view it
                # for all (stride 0); the attention then reads them once for all beams
                # (components.attention's shared-keys path: the beams become query positions).
                self.cache = [
                    layer | {"cross": tuple(t[:1].expand_as(t) for t in layer["cross"])} if "cross" in layer else layer
                    for layer in self.cache
                ]
        if self._cross_shared:
            self.cache = [
                {kind: kv for kind, kv in layer.items() if kind == "cross"}
                | reorder_cache([{"self": layer["self"]}], rows, in_place=True)[0]
                for layer in self.cache
            ]
        else:
            self.cache = reorder_cache(self.cache, rows, in_place=True)


def _beams_share(t: torch.Tensor, group: int) -> bool:
    """Whether each item's ``group`` rows of ``t`` are equal: by construction for a stride-0 view of one
    row (the prompt ran once per item), else compared (a 1.4 ms pass per tensor on tiny.en)."""
    rows = t.unflatten(0, (-1, group))
    return rows.stride(1) == 0 or torch.equal(rows, rows[:, :1].expand_as(rows))


def positions_from_end(at: Sequence[int], n: int) -> list[int]:
    """Positions ``at`` of a sequence of length ``n`` as negative indices, which also index the
    logits of a step that ran only the sequence's last positions."""
    return [a - n if a >= 0 else a for a in at]


def any_hook(model: Any) -> bool:
    """Whether any module of ``model`` has a hook (a hook point that is live, or a hook a user put
    on a module): a fast path that changes which rows or positions run is taken only without."""
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in model.modules()
    )


def _step_logits(
    step: Callable[..., torch.Tensor], seq: torch.Tensor, first: bool, no_speech: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last position's logits ``[rows, vocab]`` and, at the first step with ``no_speech =
    (position, token)``, ``p(token)`` at that position (openai-whisper's ``no_speech_prob``): only
    those positions' logits are computed (the prompt's others are never read)."""
    if not first or no_speech is None:
        return step(seq, [seq.shape[1] - 1])[:, -1], None
    pos, token = no_speech
    logits = step(seq, [pos, seq.shape[1] - 1])
    return logits[:, -1], logits[:, 0].float().softmax(-1)[:, token]


def sample(
    step: Callable[[torch.Tensor], torch.Tensor],
    prompt: torch.Tensor,
    rules: LogitRules,
    *,
    eos: int,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    state: DecodingState | None = None,
    no_speech: tuple[int, int] | None = None,
) -> GenerationOutput:
    """Greedy (``do_sample=False`` or ``temperature == 0``) or sampled decoding of ``prompt [rows, p]``."""
    rows, p = prompt.shape
    greedy = not do_sample or temperature == 0
    seq = prompt
    finished = torch.zeros(rows, dtype=torch.bool, device=prompt.device)
    eos_t = torch.full((rows,), eos, dtype=torch.long, device=prompt.device)
    toks, lps, nsp = [], [], None
    for t in range(max_new_tokens):
        if state is not None:
            state.step = t
        logits, ns = _step_logits(step, seq, t == 0, no_speech)
        nsp = ns if t == 0 else nsp
        scores, logprobs = rules.apply_with_log_probs(logits.float(), seq[:, p:])
        if greedy:
            token = scores.max(-1).indices  # argmax's first maximum, ~2x faster on CPU
        else:
            token = torch.multinomial(F.softmax(scores / temperature, dim=-1), 1, generator=generator)[:, 0]
        lp = logprobs.gather(-1, token[:, None])[:, 0]
        token = torch.where(finished, eos_t, token)
        lp = lp.masked_fill(finished, 0.0)
        toks.append(token)
        lps.append(lp)
        seq = torch.cat([seq, token[:, None]], dim=1)
        finished |= token == eos
        if finished.all():
            break
    tokens = torch.stack(toks, 1) if toks else prompt[:, :0]
    logprobs = torch.stack(lps, 1) if lps else torch.zeros(rows, 0, device=prompt.device)
    return GenerationOutput(sequences=seq, tokens=tokens, logprobs=logprobs, finished=finished, no_speech_probs=nsp)


def rank_sequences(
    lengths: Sequence[int],
    sum_logprobs: Sequence[float],
    length_penalty: float | None = None,
) -> int:
    """Index of the best of one audio's candidates (openai-whisper's ``MaximumLikelihoodRanker``):
    ``argmax_i sum_logprob_i / penalty(n_i)`` with ``n_i`` the candidate's tokens without end of
    text, ``penalty(n) = n`` when ``length_penalty`` is None, else GNMT's ``((5 + n) / 6) ** length_penalty``.
    Ties go to the first candidate."""
    scores = [
        lp / (n if length_penalty is None else ((5 + n) / 6) ** length_penalty) for n, lp in zip(lengths, sum_logprobs)
    ]
    return int(np.argmax(scores))


def openai_beam_search(
    stepper: Stepper,
    prompt: torch.Tensor,
    rules: LogitRules,
    *,
    eos: int,
    max_new_tokens: int,
    beam_size: int,
    patience: float | None = None,
    length_penalty: float | None = None,
    state: DecodingState | None = None,
    no_speech: tuple[int, int] | None = None,
) -> GenerationOutput:
    """openai-whisper's beam search (``BeamSearchDecoder`` + ``MaximumLikelihoodRanker``) over
    ``prompt [n_audio * beam_size, p]`` (each audio's prompt repeated ``beam_size`` times); one row
    per audio: the ranked winner among its finished candidates.

    At each step every running beam proposes its ``beam_size + 1`` most likely tokens under
    ``log_softmax(rules(logits))``; an audio's candidates (keyed by their whole token sequence, so
    identical beams merge, as at the first step) are sorted by cumulative log-prob; those ending in
    end of text join the audio's finished list (up to ``round(beam_size * patience)``), the best
    ``beam_size`` others run on. The search stops when every audio has that many finished
    candidates or after ``max_new_tokens`` steps; an audio with fewer than ``beam_size`` finished
    ones takes its best running beams as they are. ``sum_logprobs`` are float32 sums, as openai's."""
    rows, p = prompt.shape
    n_audio = rows // beam_size
    max_candidates = round(beam_size * (patience or 1.0))
    if max_candidates < 1:
        raise ValueError(f"beam_size={beam_size} with patience={patience} keeps no finished candidate")
    sequences = [tuple(r) for r in prompt.tolist()]
    token_logprobs: list[list[float]] = [[] for _ in range(rows)]
    sum_logprobs = torch.zeros(rows)
    # per audio: finished sequence (prompt + tokens + eos) -> (sum log-prob, per-token log-probs)
    finished: list[dict[tuple[int, ...], tuple[float, list[float]]]] = [{} for _ in range(n_audio)]
    tokens = prompt
    nsp = None
    for t in range(max_new_tokens):
        if state is not None:
            state.step = t
        logits, ns = _step_logits(stepper, tokens, t == 0, no_speech)
        if t == 0:
            nsp = None if ns is None else ns.view(n_audio, beam_size)[:, 0]
        logprobs = rules.apply_with_log_probs(logits.float(), tokens[:, p:])[1]
        top_logprobs, top_tokens = logprobs.topk(beam_size + 1)
        candidate_scores = (sum_logprobs[:, None] + top_logprobs.cpu()).tolist()  # float32 sums, as openai's
        top_logprobs, top_tokens = top_logprobs.tolist(), top_tokens.tolist()
        next_sequences, sources, next_sums, next_logprobs = [], [], [], []
        for audio in range(n_audio):
            scores: dict[tuple[int, ...], float] = {}
            origin: dict[tuple[int, ...], tuple[int, float]] = {}
            for beam in range(beam_size):
                row = audio * beam_size + beam
                for lp, token, score in zip(top_logprobs[row], top_tokens[row], candidate_scores[row]):
                    seq = sequences[row] + (token,)
                    scores[seq] = score
                    origin[seq] = (row, lp)
            newly: dict[tuple[int, ...], float] = {}
            for seq in sorted(scores, key=scores.get, reverse=True):
                if seq[-1] == eos:
                    newly[seq] = scores[seq]
                else:
                    row, lp = origin[seq]
                    next_sequences.append(seq)
                    sources.append(row)
                    next_sums.append(scores[seq])
                    next_logprobs.append(token_logprobs[row] + [lp])
                    if len(next_sequences) == (audio + 1) * beam_size:
                        break
            for seq in sorted(newly, key=newly.get, reverse=True):
                if len(finished[audio]) >= max_candidates:
                    break
                row, lp = origin[seq]
                finished[audio][seq] = (newly[seq], token_logprobs[row] + [lp])
        sequences, token_logprobs = next_sequences, next_logprobs
        sum_logprobs = torch.tensor(next_sums, dtype=torch.float32)
        tokens = torch.tensor(sequences, dtype=torch.long, device=prompt.device)
        if all(len(f) >= max_candidates for f in finished):
            break
        stepper.reorder(torch.tensor(sources, device=prompt.device), beam_size)
    return _ranked(
        prompt, p, beam_size, eos, sequences, token_logprobs, sum_logprobs.tolist(), finished, length_penalty, nsp
    )


def _ranked(
    prompt: torch.Tensor,
    p: int,
    beam_size: int,
    eos: int,
    sequences: list[tuple[int, ...]],
    token_logprobs: list[list[float]],
    sums: list[float],
    finished: list[dict[tuple[int, ...], tuple[float, list[float]]]],
    length_penalty: float | None,
    no_speech_probs: torch.Tensor | None,
) -> GenerationOutput:
    """openai-whisper's ``finalize`` then ``rank``: fill each audio's candidates with its best
    running beams (``<|endoftext|>`` appended) up to ``beam_size``, and keep the ranked winner."""
    picks: list[tuple[list[int], list[float], float, bool]] = []
    for audio, done in enumerate(finished):
        candidates = [(list(seq[p:-1]), lps, score, True) for seq, (score, lps) in done.items()]
        if len(done) < beam_size:
            running = range(audio * beam_size, (audio + 1) * beam_size)
            for row in sorted(running, key=lambda r: sums[r], reverse=True):
                candidates.append((list(sequences[row][p:]), token_logprobs[row], sums[row], False))
                if len(candidates) >= beam_size:
                    break
        best = rank_sequences([len(c[0]) for c in candidates], [c[2] for c in candidates], length_penalty)
        picks.append(candidates[best])
    n = max(len(toks) + done for toks, _, _, done in picks)
    dev = prompt.device
    tokens = torch.full((len(picks), n), eos, dtype=torch.long, device=dev)
    logprobs = torch.zeros((len(picks), n), device=dev)
    for i, (toks, lps, _, _) in enumerate(picks):
        tokens[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        logprobs[i, : len(lps)] = torch.tensor(lps[:n])
    sequences_out = torch.cat([prompt.view(len(picks), beam_size, p)[:, 0], tokens], 1)
    return GenerationOutput(
        sequences=sequences_out,
        tokens=tokens,
        logprobs=logprobs,
        finished=torch.tensor([done for _, _, _, done in picks], device=dev),
        no_speech_probs=no_speech_probs,
        sum_logprobs=torch.tensor([score for _, _, score, _ in picks]),
    )


def beam_search(
    stepper: Stepper,
    prompt: torch.Tensor,
    rules: LogitRules,
    *,
    eos: int,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
    patience: float | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    state: DecodingState | None = None,
    no_speech: tuple[int, int] | None = None,
) -> GenerationOutput:
    """Hugging Face's beam search (``early_stopping=False``) over ``prompt [batch * num_beams, p]``
    (each item's prompt repeated ``num_beams`` times); returns the best hypothesis per item.

    ``patience`` (openai-whisper's name) keeps ``round(num_beams * patience)`` finished
    hypotheses before the search may stop (``None``: ``num_beams``, HF's rule)."""
    rows, p = prompt.shape
    n_items, beams = rows // num_beams, num_beams
    dev = prompt.device
    n_finished = max(beams, round(beams * patience)) if patience is not None else beams
    keep = 2 * beams
    max_len = p + max_new_tokens
    run_seq = torch.full((n_items, beams, max_len), eos, dtype=torch.long, device=dev)
    run_seq[:, :, :p] = prompt.view(n_items, beams, p)
    run_lp = torch.zeros((n_items, beams, max_new_tokens), device=dev)
    run_scores = torch.zeros((n_items, beams), device=dev)
    run_scores[:, 1:] = -1e9
    fin_seq = torch.full((n_items, n_finished, max_len), eos, dtype=torch.long, device=dev)
    fin_lp = torch.zeros((n_items, n_finished, max_new_tokens), device=dev)
    fin_scores = torch.full((n_items, n_finished), -1e9, device=dev)
    fin_done = torch.zeros((n_items, n_finished), dtype=torch.bool, device=dev)
    fin_len = torch.zeros((n_items, n_finished), dtype=torch.long, device=dev)
    is_open = torch.ones((n_items, 1), dtype=torch.bool, device=dev)
    top_mask = torch.arange(keep, device=dev) < beams
    offset = torch.arange(n_items, device=dev)[:, None] * beams
    nsp = None
    cur = p
    for t in range(max_new_tokens):
        if state is not None:
            state.step = t
        logits, ns = _step_logits(stepper, run_seq.view(rows, max_len)[:, :cur], t == 0, no_speech)
        if t == 0:
            nsp = None if ns is None else ns.view(n_items, beams)[:, 0]
        lp = F.log_softmax(logits.float(), dim=-1)
        lp = rules.apply(lp, run_seq.view(rows, max_len)[:, p:cur])
        vocab = lp.shape[-1]
        acc = (lp.view(n_items, beams, vocab) + run_scores[:, :, None]).view(n_items, beams * vocab)
        if do_sample:
            idx = torch.multinomial(F.softmax(acc / temperature, dim=-1), keep, generator=generator)
            top, order = acc.gather(1, idx).sort(dim=-1, descending=True)
            idx = idx.gather(1, order)
        else:
            top, idx = torch.topk(acc, k=keep)
        beam, tok = idx // vocab, idx % vocab
        cand_seq = run_seq.gather(1, beam[:, :, None].expand(-1, -1, max_len)).clone()
        cand_seq[:, :, cur] = tok
        cand_lp = run_lp.gather(1, beam[:, :, None].expand(-1, -1, max_new_tokens)).clone()
        cand_lp[:, :, t] = lp.view(n_items, beams * vocab).gather(1, idx)  # this token's own log-prob
        hits = (tok == eos) | (cur + 1 >= max_len)
        # running beams for the next step: the best beams candidates that did not just finish
        live = top + hits.to(torch.float32) * -1.0e9
        nxt = torch.topk(live, k=beams)[1]
        run_seq = cand_seq.gather(1, nxt[:, :, None].expand(-1, -1, max_len))
        run_lp = cand_lp.gather(1, nxt[:, :, None].expand(-1, -1, max_new_tokens))
        run_scores = live.gather(1, nxt)
        parent = beam.gather(1, nxt)
        # finished hypotheses: merge the candidates that just finished among the top beams
        just = hits & top_mask[None, :]
        score = top / ((cur + 1 - p) ** length_penalty)
        score = score + (~is_open).to(torch.float32) * -1.0e9
        score = score + (~just) * -1.0e9
        m_scores = torch.cat((fin_scores, score), dim=1)
        pick = torch.topk(m_scores, k=n_finished)[1]
        fin_seq = torch.cat((fin_seq, cand_seq), 1).gather(1, pick[:, :, None].expand(-1, -1, max_len))
        fin_lp = torch.cat((fin_lp, cand_lp), 1).gather(1, pick[:, :, None].expand(-1, -1, max_new_tokens))
        fin_len = torch.cat((fin_len, torch.full_like(top, t + 1, dtype=torch.long)), 1).gather(1, pick)
        fin_done = torch.cat((fin_done, just), 1).gather(1, pick)
        fin_scores = m_scores.gather(1, pick)
        cur += 1
        best_possible = run_scores[:, :1] / ((cur - p) ** length_penalty)
        worst = torch.where(fin_done, fin_scores.min(dim=1, keepdim=True)[0], -1.0e9)
        is_open = is_open & (best_possible > worst).any(dim=-1, keepdim=True)
        if not bool(is_open.any()) or bool(hits.all()):
            break
        stepper.reorder((parent + offset).view(-1), beams)
    n = int(fin_len[:, 0].max()) if n_items else 0
    tokens = fin_seq[:, 0, p : p + n]
    lengths = fin_len[:, 0]
    pad = torch.arange(n, device=dev)[None, :] >= lengths[:, None]
    logprobs = fin_lp[:, 0, :n].masked_fill(pad, 0.0)
    finished = (tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0] == eos) & fin_done[:, 0]
    sequences = torch.cat([prompt.view(n_items, beams, p)[:, 0], tokens], 1)
    return GenerationOutput(
        sequences=sequences, tokens=tokens, logprobs=logprobs, finished=finished, no_speech_probs=nsp
    )


__all__ = [
    "LogitRules",
    "Stepper",
    "any_hook",
    "positions_from_end",
    "beam_search",
    "openai_beam_search",
    "rank_sequences",
    "sample",
]
