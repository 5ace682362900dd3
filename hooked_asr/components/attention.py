"""One parameterised attention: self or cross, causal or not, rotary or not, grouped heads or not.

With ``x`` the query stream and ``y`` the key/value stream (``y = x`` for self-attention,
the encoder output for cross-attention), per head ``h``::

    q_h = x W_Q[h] + b_Q[h]          k_h = y W_K[h] (+ b_K[h])       v_h = y W_V[h] + b_V[h]
    scores_h = q_h k_h^T / sqrt(d_head)  (+ causal / padding mask)
    pattern_h = softmax(scores_h)       z_h = pattern_h v_h
    out = sum_h z_h W_O[h] + b_O

Weights use TransformerLens's head-explicit layout: ``W_Q: [n_heads, d_model, d_head]``,
``W_O: [n_heads, d_head, d_model]``. With grouped-query attention ``W_K, W_V`` have
``n_kv_heads`` heads and query head ``h`` reads key head ``h // (n_heads // n_kv_heads)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.components.products import PLAIN_TENSORS as _PLAIN
from hooked_asr.components.products import product
from hooked_asr.hooks import HookPoint

KV = tuple[torch.Tensor, torch.Tensor]  # (k, v), each [batch, kv_head, pos, d_head]; or a KVCache


def project_heads(
    x: Float[torch.Tensor, "batch pos d_model"],
    W: Float[torch.Tensor, "head d_model d_head"],
    b: Float[torch.Tensor, "head d_head"] | None = None,
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """``y[..., h, :] = x W[h] + b[h]`` for all heads at once.

    One GEMM ``x.reshape(-1, d_model) @ W_flat`` with ``W_flat = W.permute(1, 0, 2)
    .reshape(d_model, head * d_head)``, viewed as ``[batch, pos, head, d_head]``. ``W_flat`` is
    a view (no copy) for the layouts weights have here: converted from Hugging Face (its
    ``[head * d_head, d_model]`` matrix, transposed) or allocated by :class:`Attention`. For
    any other layout (e.g. a contiguous ``[head, d_model, d_head]`` tensor) the heads become
    the batch of one ``bmm`` over a broadcast view of ``x``, which copies neither operand; the
    old ``x.unsqueeze(1) @ W`` copied ``x`` once per head and ``W`` once per batch row.
    """
    n_heads, d_model, d_head = W.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, d_model)
    if _flat_is_view(W):
        return product(x2, _flat(W), None if b is None else b.reshape(-1)).view(*lead, n_heads, d_head)
    y = x2.unsqueeze(0) @ W  # [head, rows, d_head]; x2 broadcast with stride 0, not copied
    if b is not None:
        y = y + b[:, None, :]
    return y.permute(1, 0, 2).view(*lead, n_heads, d_head)


def _flat(W: torch.Tensor) -> torch.Tensor:
    """``W [head, d_model, d_head]`` as the ``[d_model, head * d_head]`` matrix (a view, see :func:`_flat_is_view`)."""
    return W.permute(1, 0, 2).reshape(W.shape[1], W.shape[0] * W.shape[2])


def _flat_or_none(W: torch.Tensor) -> torch.Tensor | None:
    return _flat(W) if _flat_is_view(W) else None


def _rows_of_heads(W_O: torch.Tensor) -> torch.Tensor:
    """``W_O [head, d_head, d_model]`` as the ``[head * d_head, d_model]`` matrix of :meth:`Attention.from_z`."""
    return W_O.reshape(-1, W_O.shape[-1])


def _flat_is_view(W: torch.Tensor) -> bool:
    """Whether ``W.permute(1, 0, 2)`` merges its last two dims without a copy."""
    return W.shape[0] == 1 or W.stride(0) == W.shape[2] * W.stride(2)


def _head_layout(*shape: int) -> torch.Tensor:
    """An uninitialised ``[head, d_model, d_head]`` (or ``[head, d_head, d_model]``) weight stored
    as ``[d_model, head, d_head]``, so that :func:`project_heads` reads it as one flat matrix."""
    n_heads, a, c = shape
    return torch.empty(a, n_heads, c).permute(1, 0, 2)


class KVBuffer:
    """Key and value storage ``[batch, kv_head, capacity, d_head]`` with room to grow, and how many
    positions are written (``filled``). Capacity doubles when full, so each position is copied O(1)
    times instead of once per later decoding step."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, filled: int):
        self.k, self.v, self.filled = k, v, filled


@dataclass(frozen=True)
class KVCache:
    """One attention's cached keys and values: the first ``length`` positions of a :class:`KVBuffer`.

    Reads as the pair ``(k, v)`` (``k, v = cache``; ``cache[0]``), each ``[batch, kv_head, length,
    d_head]``, so code that takes a plain tuple takes this too. :func:`append_kv` writes a step in
    place only when this is the buffer's latest view (nothing else was appended to it since), so
    continuing two ways from one cache stays correct.
    """

    buffer: KVBuffer
    length: int

    @property
    def k(self) -> Float[torch.Tensor, "batch kv_head pos d_head"]:
        return self.buffer.k[:, :, : self.length]

    @property
    def v(self) -> Float[torch.Tensor, "batch kv_head pos d_head"]:
        return self.buffer.v[:, :, : self.length]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.k, self.v))

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.k, self.v)[i]

    def __len__(self) -> int:
        return 2


def append_kv(
    past: KV | KVCache,
    k: Float[torch.Tensor, "batch kv_head new d_head"],
    v: Float[torch.Tensor, "batch kv_head new d_head"],
) -> KV | KVCache:
    """``(cat([past_k, k], 2), cat([past_v, v], 2))`` without copying the past at every step.

    Writes into ``past``'s buffer when ``past`` is a :class:`KVCache` that is its buffer's latest
    view and has room; otherwise starts a new buffer (a reordered or user-built cache, a tuple).
    With autograd on it is a plain ``cat`` (in-place writes would break the backward).
    """
    pk, pv = past
    if torch.is_grad_enabled() and (pk.requires_grad or pv.requires_grad or k.requires_grad or v.requires_grad):
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
    n, m = pk.shape[2], k.shape[2]
    buf = past.buffer if isinstance(past, KVCache) else None
    if (
        buf is None
        or buf.filled != n
        or n + m > buf.k.shape[2]
        or buf.k.shape[:2] != k.shape[:2]
        or buf.k.dtype != torch.result_type(pk, k)
    ):
        cap = max(2 * (n + m), 16)
        dtype = torch.result_type(pk, k)
        buf = KVBuffer(
            pk.new_empty(*pk.shape[:2], cap, pk.shape[3], dtype=dtype),
            pv.new_empty(*pv.shape[:2], cap, pv.shape[3], dtype=dtype),
            n,
        )
        buf.k[:, :, :n], buf.v[:, :, :n] = pk, pv
    buf.k[:, :, n : n + m], buf.v[:, :, n : n + m] = k, v
    buf.filled = n + m
    return KVCache(buf, n + m)


def _rows_share_kv(k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Every batch row reads the same keys/values (a cache expanded over rows, stride 0), unmasked."""
    return mask is None and k.shape[0] > 1 and k.stride(0) == 0 and v.stride(0) == 0


def _shared_kv_attention(
    q: Float[torch.Tensor, "batch head q_pos d_head"], k: torch.Tensor, v: torch.Tensor, scale: float
) -> Float[torch.Tensor, "batch head q_pos d_head"]:
    """Attention of every row to one shared ``k, v``: with no mask each query is independent, so
    the rows become query positions of one row and the keys/values are read once, not per row
    (a generation sweep's rows share the clean cross-attention cache: ~6x faster per step)."""
    b, h, n, d = q.shape
    z = F.scaled_dot_product_attention(q.transpose(0, 1).reshape(1, h, b * n, d), k[:1], v[:1], scale=scale)
    return z.view(h, b, n, d).transpose(0, 1)


def pattern_from_scores(
    scores: Float[torch.Tensor, "... q_pos k_pos"], dtype: torch.dtype | None = None
) -> Float[torch.Tensor, "... q_pos k_pos"]:
    """``softmax(scores)`` over keys in float32, cast back (half and bfloat16 as Hugging
    Face does, without a float32 copy of the scores first). :class:`Attention` computes
    ``hook_pattern`` from ``hook_attn_scores`` with it, so a pattern rebuilt from cached scores
    (``ActivationCache``) equals the one the forward computed, bit for bit."""
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype or scores.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary positions (Qwen2 / Llama "rotate half" convention).

    ``rot(x)_p = x_p * cos(p * f) + rotate_half(x_p) * sin(p * f)`` with
    ``f_i = theta^(-2i / d_head)`` repeated over both halves.
    """

    def __init__(self, d_head: int, theta: float = 10000.0):
        super().__init__()
        self.d_head, self.theta = d_head, theta
        self.register_buffer("inv_freq", self._frequencies(), persistent=False)

    def _frequencies(self, device: torch.device | str | None = None) -> torch.Tensor:
        arange = torch.arange(0, self.d_head, 2, dtype=torch.int64, device=device)
        return 1.0 / (self.theta ** (arange.float() / self.d_head))

    def reset_frequencies(self, device: torch.device | str | None = None) -> None:
        """Recompute ``inv_freq`` in float32 on ``device``: a model built on the meta device
        (to load weights without a second copy) has no values in this non-persistent buffer."""
        self.inv_freq = self._frequencies(device)

    def forward(
        self, x: Float[torch.Tensor, "batch head pos d_head"], position_ids: Int[torch.Tensor, "batch pos"]
    ) -> Float[torch.Tensor, "batch head pos d_head"]:
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype)[:, None], emb.sin().to(x.dtype)[:, None]
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention with a hook on every intermediate.

    Hooks (shapes for the positions computed in this call):
    ``hook_q [batch, q_pos, head, d_head]``, ``hook_k / hook_v [batch, k_pos, kv_head, d_head]``,
    ``hook_rot_q / hook_rot_k`` (rotary only), ``hook_attn_scores / hook_pattern
    [batch, head, q_pos, k_pos]`` (scores after the mask), ``hook_z [batch, q_pos, head, d_head]``,
    ``hook_result [batch, q_pos, head, d_model]`` (only when ``use_attn_result`` is set).

    With a key/value cache, ``hook_k``/``hook_v`` see only the new positions; a cached
    cross-attention computes (and hooks) its keys and values once, on the first call.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int | None = None,
        n_kv_heads: int | None = None,
        causal: bool = False,
        cross: bool = False,
        k_bias: bool = False,
        o_bias: bool = True,
        rotary: RotaryEmbedding | None = None,
    ):
        super().__init__()
        d_head = d_head or d_model // n_heads
        n_kv_heads = n_kv_heads or n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_head
        self.causal, self.cross = causal, cross
        self.W_Q = nn.Parameter(_head_layout(n_heads, d_model, d_head))
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.W_K = nn.Parameter(_head_layout(n_kv_heads, d_model, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_kv_heads, d_head)) if k_bias else None
        self.W_V = nn.Parameter(_head_layout(n_kv_heads, d_model, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_kv_heads, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_O = nn.Parameter(torch.zeros(d_model)) if o_bias else None
        self.rotary = rotary
        self.use_attn_result = False
        self._views: dict[tuple[int, Callable], tuple[torch.Tensor, torch.Tensor | None]] = {}  # see _subclass_view
        # load_state_dict(assign=True) puts the checkpoint's own layout in place.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.relayout_weights())

        self.hook_q = HookPoint()  # [batch, q_pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, k_pos, kv_head, d_head]
        self.hook_v = HookPoint()  # [batch, k_pos, kv_head, d_head]
        if rotary is not None:
            self.hook_rot_q = HookPoint()  # [batch, q_pos, head, d_head]
            self.hook_rot_k = HookPoint()  # [batch, k_pos, kv_head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_pattern = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_z = HookPoint()  # [batch, q_pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, q_pos, head, d_model]

    def relayout_weights(self) -> None:
        """Store ``W_Q, W_K, W_V`` as ``[d_model, head, d_head]`` in memory (same values, same
        ``[head, d_model, d_head]`` shape), so that each projection is one GEMM on a view.
        Called after every ``load_state_dict``; a layout it has not fixed is still correct
        (:func:`project_heads` then runs one copy-free ``bmm``). Every stored layout: docs/architecture.md,
        "Weight layouts"."""
        for name in ("W_Q", "W_K", "W_V"):
            W = getattr(self, name)
            if not W.is_meta and not _flat_is_view(W):
                with torch.no_grad():
                    flat = W.detach().permute(1, 0, 2).contiguous().permute(1, 0, 2)
                setattr(self, name, nn.Parameter(flat, requires_grad=W.requires_grad))

    def _project(
        self, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, hook: HookPoint, head_major: bool = False
    ) -> torch.Tensor:
        """``x W[h] + b[h]`` for every head as one GEMM over all batch rows and positions.

        Returns ``[batch, head, pos, d_head]`` (stored head-major with ``head_major``); the hook
        sees ``[batch, pos, head, d_head]``.
        """
        flat = None if type(W) in _PLAIN else self._subclass_view(W, _flat_or_none)
        if flat is None:
            y = project_heads(x, W, b)
        else:  # the int8 path's weight, its flat view kept: project_heads' product without the ops on W
            y = product(x, flat, None if b is None else b.reshape(-1)).view(*x.shape[:-1], -1, self.d_head)
        y = hook(y).transpose(1, 2)
        # Keys and values are read once per query block by the attention kernel: in head-major
        # memory those reads are contiguous, which pays for this one copy (and a cached
        # cross-attention reads them at every decoding step). Queries are read once: kept as a view.
        return y.contiguous() if head_major else y

    def _subclass_view(
        self, W: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor | None]
    ) -> torch.Tensor | None:
        """``view(W)``, kept per weight object for a weight that is a tensor subclass (the int8 path's
        ``Int8Weight``): every op on a subclass (``shape``, ``permute``, ``reshape``) dispatches in
        Python, a few microseconds each, about ten per product; such a weight refuses in-place edits,
        so its views stay valid. A new weight object (assigned to the module) gets its own view."""
        key = (id(W), view)
        hit = self._views.get(key)
        if hit is None or hit[0] is not W:
            hit = self._views[key] = (W, view(W))
        return hit[1]

    def _rotate(self, x: torch.Tensor, position_ids: torch.Tensor | None, hook: HookPoint) -> torch.Tensor:
        if position_ids is None:
            raise ValueError("rotary attention needs position_ids [batch, pos]")
        return hook(self.rotary(x, position_ids).transpose(1, 2)).transpose(1, 2)

    def forward(
        self,
        x: Float[torch.Tensor, "batch q_pos d_model"],
        kv_input: Float[torch.Tensor, "batch k_pos d_model"] | None = None,
        past_kv: KV | None = None,
        position_ids: Int[torch.Tensor, "batch q_pos"] | None = None,
        attention_mask: Float[torch.Tensor, "batch 1 q_pos k_pos"] | None = None,
    ) -> tuple[Float[torch.Tensor, "batch q_pos d_model"], KV]:
        """Attend from ``x`` to ``kv_input`` (cross) or to ``x`` and the cache (self).

        ``attention_mask`` is additive (0 keep, -inf drop) and is added after the causal
        mask. Returns the output and the keys/values to cache.
        """
        q = self._project(x, self.W_Q, self.b_Q, self.hook_q)
        if self.rotary is not None:
            q = self._rotate(q, position_ids, self.hook_rot_q)
        if self.cross and past_kv is not None:
            present = tuple(past_kv)
        else:
            if self.cross and kv_input is None:
                raise ValueError("cross-attention needs kv_input (the encoder output) or its cached keys/values")
            src = kv_input if self.cross else x
            k = self._project(src, self.W_K, self.b_K, self.hook_k, head_major=True)
            v = self._project(src, self.W_V, self.b_V, self.hook_v, head_major=True)
            if self.rotary is not None:
                k = self._rotate(k, position_ids, self.hook_rot_k)
            present = (k, v) if past_kv is None else append_kv(past_kv, k, v)
        k, v = present

        n_rep = self.n_heads // self.n_kv_heads
        if n_rep > 1:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        q_len, k_len = q.shape[2], k.shape[2]
        mask = attention_mask
        if self.causal and q_len > 1:
            causal = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
            causal = torch.zeros(q_len, k_len, dtype=q.dtype, device=q.device).masked_fill(causal, float("-inf"))
            mask = causal if mask is None else mask + causal
        scale = 1.0 / math.sqrt(self.d_head)

        if not (self.hook_attn_scores.is_live() or self.hook_pattern.is_live()):
            # No one reads the pattern: the fused kernel gives the same numbers (to ~1e-6), faster.
            if _rows_share_kv(k, v, mask):
                z = _shared_kv_attention(q, k, v, scale)
            else:
                z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        else:
            # q is scaled before the product, as Hugging Face's Whisper does.
            scores = (q * scale) @ k.transpose(-1, -2)
            if mask is not None:
                # In place: the product is this call's own tensor (no hook has seen it yet) and
                # its backward does not need it, so a [batch, head, q_pos, k_pos] allocation is saved.
                scores += mask
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(pattern_from_scores(scores, q.dtype))
            z = pattern @ v
        return self.from_z(z.transpose(1, 2)), present

    def from_z(self, z: Float[torch.Tensor, "batch q_pos head d_head"]) -> Float[torch.Tensor, "batch q_pos d_model"]:
        """``sum_h z_h W_O[h] + b_O``: the last step of :meth:`forward` (``hook_z`` fires on ``z``
        first), and where a run that resumes at ``hook_z`` with cached head outputs enters."""
        z = self.hook_z(z)
        if self.use_attn_result:
            result = self.hook_result(torch.einsum("bqhd,hdm->bqhm", z, self.W_O))
            out = result.sum(2)
            if self.b_O is not None:
                out = out + self.b_O
        else:
            # sum_h z_h W_O[h] + b_O as one GEMM: [rows, head * d_head] @ [head * d_head, d_model]
            W_O = self.W_O
            W_O = W_O.reshape(-1, W_O.shape[-1]) if type(W_O) in _PLAIN else self._subclass_view(W_O, _rows_of_heads)
            z2 = z.reshape(-1, z.shape[2] * z.shape[3])
            out = product(z2, W_O, self.b_O).view(*z.shape[:2], -1)
        return out


__all__ = [
    "KV",
    "KVBuffer",
    "KVCache",
    "append_kv",
    "Attention",
    "pattern_from_scores",
    "project_heads",
    "RotaryEmbedding",
]
