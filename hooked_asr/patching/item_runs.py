"""How a sweep runs one item's rows: what is computed once (the clean run) and where each
row's run may start, so that a patch recomputes only what it changes.

    encoder block l patched   -> rerun blocks l.. from the clean encoder.blocks.{l}.hook_resid_pre; a
                                 head (or anything after the attention) from block l's clean attn.hook_z,
                                 so block l's attention is not recomputed
    decoder component patched -> start from the clean encoder output; teacher-forced, reuse the
                                 clean cross-attention keys/values of every layer left alone
    anything else             -> the whole model

Everything goes through hook names and the public model API (``encode(start_at_layer=, attn_z=)``,
``finish_encoder``, ``generate(encoder_hidden_states=)``, ``decode(past_key_values=)``,
``results_from_generation``), choosing its fast paths from what the model declares
(``model.capabilities``: resume at a block or a head, prefix sharing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hooked_asr.hooks import block_of
from hooked_asr.models.decoding import generate_from_prefix, generate_recording_prefix
from hooked_asr.patching.components import Component
from hooked_asr.patching.metrics import Transcript


def _capabilities(model: Any) -> Any:
    """The model's declared :class:`~hooked_asr.models.base.ModelCapabilities`; a model built
    outside this package that declares none gets the slow paths only (same numbers)."""
    from hooked_asr.models.base import ModelCapabilities

    caps = getattr(model, "capabilities", None)
    return (
        caps if isinstance(caps, ModelCapabilities) else ModelCapabilities(resume_at_block=False, resume_at_head=False)
    )


def generation_settings(model: Any) -> tuple[dict[str, Any], list[int]]:
    """``(extra generate kwargs, stop ids)``: what ``model.transcribe`` decodes with
    (``model.generation_kwargs()``) and the ids a transcript ends at (``model.stop_token_ids()``)."""
    return dict(model.generation_kwargs()), list(model.stop_token_ids())


# Where a row's run may start: the encoder block a patch sits in (rerun from the clean
# residual entering it), the decoder (the clean encoder output is all it needs), or the
# features (a patch on the encoder's front end, its final norm or any other hook).
FULL, DECODER = -1, 1 << 30


def resume_point(comp: Component) -> int:
    """``l`` for a component inside encoder block ``l``; :data:`DECODER` for a decoder
    component; :data:`FULL` for anything else (the whole model must run)."""
    block = block_of(comp.hook_name)
    if block and block[0] == "encoder":
        return block[1]
    return DECODER if comp.hook_name.startswith("decoder.") else FULL


# Hooks of an encoder block from its attention's head outputs on: a run may start at the clean
# attn.hook_z of that block (what is not listed here starts at the block's residual).
_AFTER_ATTENTION = (
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.",
    "mlp.",
    "hook_mlp_out",
    "hook_resid_post",
)


def start_point(comp: Component) -> int:
    """Where a row's run starts, as one number that sorts in run order: :data:`FULL`; ``2 l`` (the
    clean ``encoder.blocks.{l}.hook_resid_pre``); ``2 l + 1`` (block ``l``'s clean ``attn.hook_z``:
    the component sits at or after block ``l``'s attention, e.g. a head); :data:`DECODER`. A run
    from a chunk's lowest start point is valid for every row in it."""
    layer = resume_point(comp)
    if layer in (FULL, DECODER):
        return layer
    after = comp.hook_name.split(".", 3)[3].startswith(_AFTER_ATTENTION)
    return 2 * layer + int(after)


@dataclass(frozen=True)
class RowBatching:
    """How many rows run together, teacher-forced, by what they rerun: ``batch_size`` rows per
    decoder-only run; rows that rerun encoder blocks in chunks of ``encoder_chunk``, whose encoder
    parts run ``encoder`` rows at a time and whose decoder part runs as one batch."""

    batch_size: int
    encoder: int
    encoder_chunk: int

    @property
    def splits_encoder(self) -> bool:
        return self.encoder < self.encoder_chunk


def row_batching(device: torch.device | str, batch_size: int, encoder_batch_size: int | None = None) -> RowBatching:
    """Batch rows where it pays, per device. Measured on CPU (tiny.en, one thread, interleaved):
    batching encoder reruns costs per row (two blocks: 1.06x the time per row at 2 rows, 1.08x
    at 6), so they run one at a time; the decoder part over rows with their own encoder outputs
    gains 1.33x at 4-6 rows (1.17x at 12, 1.19x at 24), so up to 6 such rows share it; decoder-only
    rows (shared cross-attention keys/values) gain 2x from 4 rows on and go ``batch_size`` per
    run. Elsewhere (GPU, not measured here) every kind goes ``batch_size`` per run.
    ``encoder_batch_size`` overrides the encoder reruns' rows per run."""
    cpu = torch.device(device).type == "cpu"
    enc = min(batch_size, encoder_batch_size or (1 if cpu else batch_size))
    chunk = max(enc, min(batch_size, 6)) if cpu and enc < batch_size else batch_size
    return RowBatching(batch_size, enc, chunk)


@dataclass
class TeacherForcedRun:
    """Fixed teacher-forced inputs, shaped like ``model.teacher_forced_inputs(...)`` for what reads ``.kwargs``."""

    kwargs: dict[str, Any]


def prefix_layer(chunk: Sequence[Component]) -> int | None:
    """The lowest decoder block a chunk's components sit in, or None when one is elsewhere (the
    encoder, the embeddings, the final norm): the block rows may start at on the clean prefix."""
    blocks = [block_of(c.hook_name) for c in chunk]
    if not blocks or any(b is None or b[0] != "decoder" for b in blocks):
        return None
    return min(b[1] for b in blocks)


def _touches_cross_kv(comp: Component, layer: int) -> bool:
    return comp.hook_name in (f"decoder.blocks.{layer}.cross_attn.hook_k", f"decoder.blocks.{layer}.cross_attn.hook_v")


class ItemRun:
    """One item: its clean run, computed once, and the batched runs of its chunks.

    The clean encoder pass keeps what later runs start from: the decoder's input
    (``finish_encoder`` of the last residual), the residual entering every encoder block a
    component sits in (``encoder.blocks.{l}.hook_resid_pre``), and, for a decoder with
    cross-attention, each layer's cross-attention keys and values of the clean teacher-forced
    run. Every call goes through hook names and the public model API.
    """

    def __init__(
        self, model: Any, item: Any, tf_kwargs: Mapping[str, Any], reuse: bool, inputs: Mapping[str, Any] | None = None
    ):
        # ``inputs``: one fixed teacher-forced input (``model(**inputs)``, batch 1) that every
        # teacher-forced run uses whatever its continuation; the encoder's part is what encode takes.
        self.model, self.item, self.reuse = model, item, reuse
        caps = _capabilities(model)
        self.fixed = None if inputs is None else TeacherForcedRun(dict(inputs))
        if inputs is None:
            self.features = model.prepare_features(item.audio)
            tf = model.teacher_forced_inputs(item.audio, **tf_kwargs)
            self.prompt = tf.tokens[0, : tf.prompt_len]
        else:
            self.features = {k: v for k, v in inputs.items() if k in caps.encode_inputs}
            self.prompt = None
        self.tf_kwargs = dict(tf_kwargs)
        self.gen_kwargs, _ = generation_settings(model)
        self.n_encoder = model.n_layers["encoder"]
        self.resid_pre: dict[int, torch.Tensor] = {}
        self.attn_z: dict[int, torch.Tensor] = {}
        self.encoded: torch.Tensor | None = None
        self.cross_kv: list[dict[str, Any]] | None = None
        self._tf: Any = None
        # What the model declares (models/base.py ModelCapabilities), not what its signatures look like.
        self.can_share_gen = self.can_share_tf = reuse and caps.resume_at_block
        self.can_resume = reuse and caps.resume_at_block
        self.can_resume_z = self.can_resume and caps.resume_at_head
        self.prefix: Any = None  # the clean generation's PrefixCache
        self.can_share_prefix = self.can_reuse_kv = reuse and caps.prefix_sharing

    def _batch(self, n: int, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        kwargs = self.features if kwargs is None else kwargs
        return {k: (v.expand(n, *v.shape[1:]) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}

    @torch.no_grad()
    def encode_clean(self, points: Iterable[int]) -> None:
        """One encoder pass: the decoder's input and, for each :func:`start_point` in ``points``, the
        residual entering its block (and, for ``2 l + 1``, block ``l``'s head outputs)."""
        names: dict[str, tuple[dict[int, torch.Tensor], int]] = {}
        for p in points:
            if self.can_resume and 0 <= p < 2 * self.n_encoder:
                names[f"encoder.blocks.{p // 2}.hook_resid_pre"] = (self.resid_pre, p // 2)
                if p % 2 and self.can_resume_z:
                    names[f"encoder.blocks.{p // 2}.attn.hook_z"] = (self.attn_z, p // 2)

        def keep(x: torch.Tensor, hook: Any) -> None:
            store, layer = names[hook.name]
            store[layer] = x.detach()

        with self.model.hooks(fwd_hooks=[(n, keep) for n in names]):
            resid = self.model.encode(**self.features, stop_at_layer=self.n_encoder)
        self.encoded = self.model.finish_encoder(resid, **self.features)

    @torch.no_grad()
    def encode_from(self, point: int, n: int) -> torch.Tensor | None:
        """What the decoder reads, for ``n`` rows, rerunning the encoder from :func:`start_point`
        ``point`` (block ``l = point // 2`` from its clean residual, or from its clean head outputs
        when ``point`` is odd; hooks, and so patches, fire from there on only); ``None`` when the
        whole model must run instead."""
        if self.encoded is None or point == FULL:
            return None
        layer = point // 2
        if layer >= self.n_encoder:
            return self.encoded.expand(n, *self.encoded.shape[1:])
        if layer not in self.resid_pre:
            return None
        kwargs = {k: v for k, v in self._batch(n).items() if k != "input_features"}
        if point % 2 and layer in self.attn_z:
            kwargs["attn_z"] = self.attn_z[layer].expand(n, *self.attn_z[layer].shape[1:])
        resid = self.model.encode(
            self.resid_pre[layer].expand(n, *self.resid_pre[layer].shape[1:]),
            **kwargs,
            stop_at_layer=self.n_encoder,
            start_at_layer=layer,
        )
        return self.model.finish_encoder(resid, **self._batch(n))

    def encoder_groups(self, chunk: Sequence[Component], size: int) -> list[list[int]] | None:
        """The rows of ``chunk`` whose encoder parts run together: consecutive, one start point, at
        most ``size``; ``None`` when one run does the whole chunk (a row outside the encoder's
        blocks, no clean residual to start from, or a single group)."""
        points = [start_point(c) for c in chunk]
        if self.encoded is None or not all(0 <= p < 2 * self.n_encoder and p // 2 in self.resid_pre for p in points):
            return None
        groups: list[list[int]] = []
        for i, p in enumerate(points):
            if not groups or len(groups[-1]) >= size or points[groups[-1][-1]] != p:
                groups.append([])
            groups[-1].append(i)
        return groups if len(groups) > 1 else None

    def transcripts(self, out: Any) -> list[Transcript]:
        # The decoding core's one cut-at-end-of-text and decode.
        return [Transcript(r.tokens, r.text, r.finished) for r in self.model.results_from_generation(out, self.prompt)]

    def generate(
        self,
        n: int,
        encoded: torch.Tensor | None,
        max_new_tokens: int | None,
        chunk: Sequence[Component] | None = None,
        record: bool = False,
    ) -> list[Transcript]:
        """Greedy transcripts of ``n`` rows. The clean run (``record=True``) records its prefix; a chunk whose components all sit in decoder blocks ``>= l`` shares it from block
        ``l`` (rows skip blocks ``< l`` while their tokens are the clean ones)."""
        kwargs: dict[str, Any] = dict(
            self._batch(n), prompt_ids=self.prompt, max_new_tokens=max_new_tokens, **self.gen_kwargs
        )
        layer = None if chunk is None or self.prefix is None else prefix_layer(chunk)
        if layer is not None:
            return self.transcripts(generate_from_prefix(self.model, self.prefix, layer, **kwargs))
        if encoded is not None:
            kwargs["encoder_hidden_states"] = encoded
        if record and self.can_share_prefix:
            out = generate_recording_prefix(self.model, **kwargs)
            self.prefix = out.prefix_cache
        else:
            out = self.model.generate(**kwargs)
        return self.transcripts(out)

    def teacher_forced_inputs(self, continuation: Sequence[int]) -> Any:
        if self.fixed is not None:
            return self.fixed
        if self._tf is None or self._tf[0] != list(continuation):
            self._tf = (
                list(continuation),
                self.model.teacher_forced_inputs(self.item.audio, continuation, **self.tf_kwargs),
            )
        return self._tf[1]

    @torch.no_grad()
    def teacher_forced(
        self, continuation: Sequence[int], n: int, encoded: torch.Tensor | None, cross_kv: list | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Logits ``[n, pos, vocab]`` over prompt + ``continuation``; from ``encoded`` when given
        (no encoder run), and with ``cross_kv`` from those cached cross-attention keys/values."""
        tf = self.teacher_forced_inputs(continuation)
        kwargs = self._batch(n, tf.kwargs)
        if encoded is None:
            return self.model(**kwargs), tf
        # the mel goes; any mask stays (Qwen2-Audio counts audio tokens from it)
        kwargs = {k: v for k, v in kwargs.items() if k != "input_features"}
        if cross_kv is None:
            return self.model(**kwargs, encoder_hidden_states=encoded), tf
        return self.model.decode(kwargs["decoder_input_ids"], encoded, past_key_values=cross_kv)[0], tf

    @torch.no_grad()
    def clean_teacher_forced(self, continuation: Sequence[int]) -> tuple[torch.Tensor, Any]:
        """The clean logits, keeping each layer's cross-attention keys/values for later rows."""
        if not self.can_reuse_kv:
            return self.teacher_forced(continuation, 1, self.encoded if self.can_share_tf else None)
        tf = self.teacher_forced_inputs(continuation)
        logits, cache = self.model.decode(tf.kwargs["decoder_input_ids"], self.encoded)
        self.cross_kv = [{"cross": layer["cross"]} for layer in cache]
        return logits, tf

    def shared_cross_kv(self, chunk: Sequence[Component], n: int) -> list[dict[str, Any]] | None:
        """The clean cross-attention keys/values for ``n`` rows, leaving out every layer whose
        keys/values a component of ``chunk`` patches (those are recomputed, hooks firing)."""
        if self.cross_kv is None:
            return None
        out = []
        for layer, kv in enumerate(self.cross_kv):
            if any(_touches_cross_kv(c, layer) for c in chunk):
                out.append({})
            else:
                k, v = kv["cross"]
                out.append({"cross": (k.expand(n, *k.shape[1:]), v.expand(n, *v.shape[1:]))})
        return out


def plan_chunks(
    comps: Sequence[Component], batch_size: int, split_at_resume: bool = True, rows: RowBatching | None = None
) -> list[list[Component]]:
    """Components in run order, cut into chunks of at most ``batch_size`` rows (teacher-forced with
    ``rows``: as :class:`RowBatching` says for each kind of row).

    Rows that start at the same place (:func:`start_point`) go together: first those needing
    the whole model, then encoder components by block, then decoder components (no encoder
    run); within a group the given order is kept. A run reruns the encoder from its lowest
    start point, so a run that mixed blocks would rerun the higher blocks' rows through blocks
    they do not need: with ``split_at_resume`` a chunk never spans two starting points, unless
    its encoder parts run apart anyway (``rows.splits_encoder``: then one chunk spans blocks and
    only its decoder part is batched). Teacher-forced sweeps split (measured on CPU: batching
    encoder rows gains nothing per row, so the extra blocks are pure loss - a mixed 24-row chunk
    of tiny's encoder heads made the batched sweep 0.75x the serial one); generation sweeps fill
    chunks across starting points, because decoding rows together saves far more than the extra
    encoder blocks cost.
    """

    def kind(c: Component) -> int:
        p = start_point(c)
        return p if p in (FULL, DECODER) else 0

    def cap(c: Component) -> int:
        if rows is None or kind(c) == DECODER:
            return batch_size
        return rows.encoder if kind(c) == FULL else rows.encoder_chunk

    order = sorted(range(len(comps)), key=lambda i: (start_point(comps[i]), i))
    chunks: list[list[Component]] = []
    for i in order:
        c = comps[i]
        prev = chunks[-1][-1] if chunks else None
        same = prev is not None and (
            start_point(prev) == start_point(c)
            or (rows is not None and rows.splits_encoder and kind(prev) == kind(c) == 0)
        )
        if prev is None or len(chunks[-1]) >= cap(c) or (split_at_resume and not same):
            chunks.append([])
        chunks[-1].append(c)
    return chunks


__all__ = [
    "DECODER",
    "FULL",
    "ItemRun",
    "RowBatching",
    "generation_settings",
    "plan_chunks",
    "prefix_layer",
    "resume_point",
    "row_batching",
    "start_point",
]
