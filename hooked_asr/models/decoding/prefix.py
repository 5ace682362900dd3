"""Sharing a clean run's prefix: rows patched at decoder layer ``l`` reuse what layers ``< l`` of
the clean run computed, for as long as their tokens are the clean tokens.

A decoder's layers ``< l`` at position ``t`` read only the tokens ``0..t`` and the encoder output.
So for a row whose tokens so far equal the clean run's and whose interventions all sit at layers
``>= l`` (and after the encoder), layers ``< l`` compute exactly the clean run's numbers:

    resid_pre^l_t(row) = resid_pre^l_t(clean)        K^i_t(row), V^i_t(row) = K^i_t(clean), V^i_t(clean)  (i < l)

A :class:`PrefixCache`, recorded once from the clean run (:func:`generate_recording_prefix`),
holds the clean tokens, every layer's self-attention keys/values and ``decoder.blocks.{i}
.hook_resid_pre`` at every position the clean run fed, and its cross-attention keys/values.
``generate_from_prefix(model, prefix, l, ...)`` then runs each step as follows: every row is
embedded (``decoder.hook_embed`` / ``hook_pos_embed`` fire on all rows, so position tracking
works); rows still on the clean prefix enter block ``l`` with the clean residual and skip blocks
``< l``; a row whose newest token differs from the clean token at that step (or that runs past the
clean run's length) has *diverged*: from then on it runs every block, its blocks ``< l`` cache
starting as the clean one (valid: up to the divergence its tokens were the clean ones). Blocks
``>= l`` run on every row at every step, so their hooks see what the plain run shows them.

Cross-attention keys/values are the clean run's (the rows read the clean audio) at every layer
whose ``cross_attn.hook_k`` / ``hook_v`` has no live hook; rows then share one copy, and the
attention reads it once for all rows. Hooks on decoder blocks ``< l`` would not see matched
steps, so they are refused; a hook on the embeddings may not change a matched row.
Beam search and ``use_cache=False`` are refused (no prefix to share across reordered beams /
without a cache).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int

from hooked_asr.models.decoding.search import positions_from_end

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PrefixCache:
    """What a clean one-row ``generate`` computed, for rows that share its prefix.

    ``tokens [pos]``: prompt + generated tokens; ``prompt_len``; per decoder layer ``i``:
    ``resid_pre[i] [1, fed, d_model]`` (``decoder.blocks.{i}.hook_resid_pre``), ``self_kv[i]``
    (keys, values ``[1, kv_head, fed, d_head]``), ``cross_kv[i]`` (``[1, head, frame, d_head]``);
    ``context``: what the decoder read (the encoder output). ``fed`` = positions run through the
    decoder (the last generated token is never fed): ``len(tokens) - 1``.
    """

    tokens: Int[torch.Tensor, "pos"]
    prompt_len: int
    resid_pre: list[Float[torch.Tensor, "1 fed d_model"]]
    self_kv: list[KV]
    cross_kv: list[KV | None]
    context: Any

    @property
    def n_fed(self) -> int:
        return int(self.resid_pre[0].shape[1])

    @property
    def n_layers(self) -> int:
        return len(self.resid_pre)


@dataclass(frozen=True)
class PrefixUse:
    """What one ``generate`` call does with a prefix: record it (``record``), or decode from
    ``prefix`` at block ``start_at_layer``; the default does neither."""

    prefix: PrefixCache | None = None
    start_at_layer: int = 0
    record: bool = False


@contextlib.contextmanager
def _using(model: Any, use: PrefixUse) -> Iterator[None]:
    if model._prefix_use is not None:
        raise RuntimeError("prefix sharing is already active on this model (nested generate_*_prefix calls)")
    model.require("prefix_sharing", "prefix sharing")
    model._prefix_use = use
    try:
        yield
    finally:
        model._prefix_use = None


def generate_recording_prefix(
    model: Any,
    input_features: Float[torch.Tensor, "1 n_mels frames"],
    prompt_ids: Sequence[int] | Int[torch.Tensor, "1 prompt"],
    **generate_kwargs: Any,
) -> Any:
    """``model.generate`` (one row, greedy or sampled, with the cache) whose output also holds
    ``out.prefix_cache``: the :class:`PrefixCache` rows patched later can share.

    Example::

        clean = generate_recording_prefix(model, feats, prompt, max_new_tokens=20)
        out = generate_from_prefix(model, clean.prefix_cache, 3, feats.expand(8, -1, -1), prompt)
    """
    with _using(model, PrefixUse(record=True)):
        return model.generate(input_features, prompt_ids, **generate_kwargs)


def generate_from_prefix(
    model: Any,
    prefix: PrefixCache,
    start_at_layer: int,
    input_features: Float[torch.Tensor, "batch n_mels frames"],
    prompt_ids: Sequence[int] | Int[torch.Tensor, "batch prompt"],
    **generate_kwargs: Any,
) -> Any:
    """``model.generate`` for rows of the clean audio whose hooks all sit at decoder layers
    ``>= start_at_layer``: while a row's tokens are the clean ones it skips blocks
    ``< start_at_layer`` (their numbers are the clean run's), and it reads the clean
    cross-attention keys/values wherever ``cross_attn.hook_k/v`` is not hooked (the module
    docstring gives the rule). Tokens and log-probs equal the plain run's to float rounding.
    Hooks on blocks ``< start_at_layer``, beams and ``use_cache=False`` are refused."""
    with _using(model, PrefixUse(prefix, start_at_layer)):
        return model.generate(input_features, prompt_ids, **generate_kwargs)


class PrefixRecorder:
    """Hooks on every ``decoder.blocks.{i}.hook_resid_pre`` that keep what each block received
    (added last, so after any user hook), for :meth:`PrefixCache` recording."""

    def __init__(self, n_layers: int):
        self.parts: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]

    def hooks(self) -> list[tuple[str, Any]]:
        def keep(i: int):
            return lambda x, hook: self.parts[i].append(x.detach())

        return [(f"decoder.blocks.{i}.hook_resid_pre", keep(i)) for i in range(len(self.parts))]

    def build(self, sequences: torch.Tensor, prompt_len: int, cache: list[dict[str, KV]], context: Any) -> PrefixCache:
        resid = [torch.cat(p, dim=1) for p in self.parts]
        return PrefixCache(
            sequences[0].clone(),
            prompt_len,
            resid,
            [c["self"] for c in cache],
            [c.get("cross") for c in cache],
            context,
        )


def check_prefix_use(
    model: Any, prefix: PrefixCache, prompt: torch.Tensor, start_at_layer: int, num_beams: int, use_cache: bool
) -> None:
    """Refuse what prefix sharing cannot do exactly, naming the fix."""
    n = prefix.n_layers
    if not 0 <= start_at_layer < n:
        raise ValueError(f"start_at_layer={start_at_layer}: must lie in [0, {n - 1}] (the decoder's layers)")
    if num_beams > 1:
        raise ValueError(
            "prefix sharing with num_beams > 1: beams reorder rows every step; decode greedily or with model.generate"
        )
    if not use_cache:
        raise ValueError("prefix sharing with use_cache=False: sharing the prefix needs the key/value cache")
    if prompt.shape[1] > prefix.n_fed or not bool((prompt == prefix.tokens[: prompt.shape[1]]).all()):
        clean = prefix.tokens[: prefix.prompt_len].tolist()
        raise ValueError(
            f"the prompt {prompt[0].tolist()} is not the clean run's ({clean}); record the prefix with the same prompt"
        )
    for i in range(start_at_layer):
        for name, hp in model.decoder.blocks[i].named_modules():
            if hasattr(hp, "is_live") and hp.is_live():
                raise ValueError(
                    f"a hook is attached to decoder.blocks.{i}.{name}, below start_at_layer={start_at_layer}: rows on "
                    "the clean prefix skip that block; lower start_at_layer to the hook's layer or use model.generate"
                )


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:])


class PrefixStepper:
    """The step function of :func:`~hooked_asr.models.decoding.search.sample` for rows that share
    ``prefix`` from block ``start_at_layer`` (see the module docstring for the rule)."""

    def __init__(self, model: Any, context: Any, prefix: PrefixCache, start_at_layer: int, n_rows: int):
        self.model, self.context, self.prefix, self.l = model, context, prefix, start_at_layer
        dev = prefix.tokens.device
        self.diverged = torch.zeros(n_rows, dtype=torch.bool, device=dev)
        self.div_rows = torch.zeros(0, dtype=torch.long, device=dev)  # row order of the blocks-< l cache
        self.lower: list[KV | None] = [None] * start_at_layer
        blocks = model.decoder.blocks
        self.upper: list[dict[str, KV]] = []
        for i in range(start_at_layer, prefix.n_layers):
            xa = blocks[i].cross_attn
            live = xa.hook_k.is_live() or xa.hook_v.is_live()
            self.upper.append({} if live else {"cross": tuple(_rows(t, n_rows) for t in prefix.cross_kv[i])})
        self.started = False
        self.n_rows = n_rows

    def _diverge(self, seq: torch.Tensor, start: int) -> None:
        """Mark rows whose newest token left the clean tokens; their blocks-< l cache starts as
        the clean one over positions ``0..start-1``."""
        p = self.prefix
        if start < p.n_fed:  # the newest token sits at position ``start``; the clean run fed it too
            now = self.diverged | (seq[:, start] != p.tokens[start])
        else:
            now = torch.ones_like(self.diverged)
        new = (now & ~self.diverged).nonzero()[:, 0]
        if new.numel() == 0:
            return
        for i in range(self.l):
            k, v = (_rows(x[:, :, :start], new.numel()) for x in p.self_kv[i])
            old = self.lower[i]
            self.lower[i] = (
                (k.contiguous(), v.contiguous()) if old is None else (torch.cat([old[0], k]), torch.cat([old[1], v]))
            )
        self.div_rows = torch.cat([self.div_rows, new])
        self.diverged = now

    def __call__(
        self, seq: Int[torch.Tensor, "rows pos"], at: Sequence[int] | None = None
    ) -> Float[torch.Tensor, "rows new_pos d_vocab"]:
        """Logits of the positions run this step (with ``at``: at those positions of ``seq`` only)."""
        p, n = self.prefix, self.n_rows
        if not self.started:
            ids, start = seq, 0
        else:
            ids, start = seq[:, -1:], seq.shape[1] - 1
            self._diverge(seq, start)
        n_pos = ids.shape[1]
        m = self.div_rows.numel()
        resid = _rows(p.resid_pre[self.l][:, start : start + n_pos], n) if m < n else None
        lower = []
        for i in range(self.l):
            if m and self.lower[i] is not None:
                lower.append({"self": self.lower[i], "cross": tuple(_rows(t, m) for t in p.cross_kv[i])})
            else:
                lower.append({"cross": tuple(_rows(t, m) for t in p.cross_kv[i])} if m else {})
        logits, present = self.model._decode_step(
            self.context,
            ids,
            lower + self.upper,
            start_at_layer=self.l,
            resid_pre=resid,
            run_rows=self.div_rows,
        )
        for i in range(self.l):
            self.lower[i] = present[i]["self"] if m else self.lower[i]
        self.upper = present[self.l :]
        self.started = True
        return logits if at is None else logits[:, positions_from_end(at, seq.shape[1])]


__all__ = ["PrefixCache", "PrefixRecorder", "PrefixStepper", "check_prefix_use"]
