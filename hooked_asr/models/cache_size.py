"""How big a cache will be, before it is built: each hook's activation shape from the config
and the input shapes alone (nothing runs), and where each hook's position axes are.

Used by :meth:`TLCompatMixin.run_with_cache` to warn before a large cache is built, and by its
slicing (``pos_slice`` / ``frame_slice``). ``tests/models/test_tl_compat.py`` checks the estimate
against the bytes actually cached, hook by hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformer_lens.utilities import Slice

_HEAD_AXIS_SITES = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_rot_q", "hook_rot_k")
_CHANNEL_FIRST = ("encoder.hook_mel", "encoder.hook_conv1", "encoder.hook_conv2")


def position_axes(hook_name: str) -> dict[str, int]:
    """Where the position axes of a hook's activation are: ``{"token": axis, "frame": axis}``.

    Decoder sites are token-indexed except cross-attention keys/values (frame-indexed, computed
    from the encoder output); a cross-attention pattern has both (query tokens, key frames).
    Self-attention patterns list their query axis only (TransformerLens slices the query).
    Channel-first encoder hooks (``hook_mel``, ``hook_conv1/2``) have their frame axis last.
    """
    site = hook_name.rsplit(".", 1)[-1]
    is_head = site in _HEAD_AXIS_SITES
    if hook_name in _CHANNEL_FIRST:
        return {"frame": -1}
    if not hook_name.startswith("decoder."):
        return {"frame": -3 if is_head else -2}
    if ".cross_attn." in hook_name:
        if site in ("hook_k", "hook_v"):
            return {"frame": -3}
        if site in ("hook_attn_scores", "hook_pattern"):
            return {"token": -2, "frame": -1}
    return {"token": -3 if is_head else -2}


def patterns_kept_as_scores(
    names: list[str], frame_slice: Any = None, dtype: torch.dtype | None = None, device: Any = None
) -> dict[str, str]:
    """Which cached attention patterns an :class:`ActivationCache` keeps as their scores only:
    ``{pattern name: scores name}``.

    ``pattern = softmax(scores)`` over keys, so when both are cached one of them is enough and
    the pattern is rebuilt on access, bit for bit (half a full cache's attention memory). Not
    when the copy would differ: a cast (``dtype``) or a move (``device``) before the softmax, or
    a ``frame_slice`` that cuts the key axis the softmax runs over (cross-attention).
    """
    if dtype is not None or device is not None:
        return {}
    kept = set(names)
    out = {}
    for name in names:
        if not name.endswith(".hook_pattern"):
            continue
        scores = name[: -len("hook_pattern")] + "hook_attn_scores"
        if scores in kept and not (frame_slice is not None and position_axes(name).get("frame") == -1):
            out[name] = scores
    return out


@dataclass
class CacheSizeEstimate:
    """Bytes each cached hook will take (``per_hook``), computed from the config and the input
    shapes before the run. ``str()`` gives a readable summary with the largest hooks. Patterns an
    :class:`ActivationCache` keeps as their scores (``derived``) cost nothing and are not in ``per_hook``."""

    total_bytes: int
    per_hook: dict[str, int] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30

    def top(self, k: int = 5) -> list[tuple[str, int]]:
        return sorted(self.per_hook.items(), key=lambda kv: -kv[1])[:k]

    def __str__(self) -> str:
        top = ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in self.top(3))
        return f"cache of {len(self.per_hook)} hooks: {self.total_bytes / 2**20:.1f} MiB (largest: {top})"


def estimate_cache_size(
    model: Any,
    inputs: dict[str, Any],
    names_filter: Any = None,
    pos_slice: Any = None,
    frame_slice: Any = None,
    dtype: torch.dtype | None = None,
    incl_bwd: bool = False,
    return_cache_object: bool = False,
    device: Any = None,
) -> CacheSizeEstimate:
    """Bytes ``run_with_cache`` would store for these inputs, from the config and the input
    shapes alone (nothing runs). Accounts for which hooks fire (the encoder's only when it
    runs, ``hook_result`` only with ``use_attn_result``), grouped-query key/value heads,
    Qwen2-Audio's pooling, slicing and ``dtype`` (or the model's; RMSNorm scales are float32),
    and, for an :class:`ActivationCache` (``return_cache_object``), the patterns it keeps as
    their scores (:func:`patterns_kept_as_scores`)."""
    keep = names_filter_fn(names_filter)
    dims = _cache_dims(model, inputs)
    pslice, fslice = as_slice(pos_slice), as_slice(frame_slice)
    fired = [n for n in model.hook_dict if keep(n) and _hook_shape(model, n, dims) is not None]
    derived = patterns_kept_as_scores(fired, fslice, dtype, device) if return_cache_object else {}
    per_hook: dict[str, int] = {}
    for name in fired:
        shape = _hook_shape(model, name, dims)
        if name in derived:
            continue
        shape = list(shape)
        axes = position_axes(name)
        for kind, sl in (("token", pslice), ("frame", fslice)):
            if sl is not None and kind in axes:
                ax = axes[kind] % len(shape)
                shape[ax] = _sliced_len(sl, shape[ax])
        el = (dtype or _hook_dtype(model, name, dims["dtype"])).itemsize
        per_hook[name] = math.prod(shape) * el * (2 if incl_bwd else 1)
    return CacheSizeEstimate(sum(per_hook.values()), per_hook, list(derived))


def _hook_dtype(model: Any, name: str, model_dtype: torch.dtype) -> torch.dtype:
    if name.endswith("hook_scale") and type(model.get_submodule(name.rsplit(".", 1)[0])).__name__ == "RMSNorm":
        return torch.float32
    return model_dtype


def _cache_dims(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    enc = model.cfg.encoder
    feats, ehs = inputs.get("input_features"), inputs.get("encoder_hidden_states")
    toks = inputs.get("decoder_input_ids", inputs.get("input_ids"))
    d: dict[str, Any] = {"dtype": model.W_E.dtype, "enc": feats is not None and ehs is None}
    if d["enc"]:
        d["Be"], d["M"] = feats.shape[0], feats.shape[-1]
        d["F"] = (d["M"] - 1) // 2 + 1  # the stride-2 conv
        d["P"] = d["F"] // enc.pool_stride if enc.pool_stride else d["F"]
    d["Bd"] = toks.shape[0] if toks is not None else 0
    d["T"] = toks.shape[1] if toks is not None else 0
    d["X"] = ehs.shape[1] if ehs is not None else d.get("P", 0)  # frames cross-attention reads
    d["use_result"] = {n: m.use_attn_result for n, m in model.named_modules() if hasattr(m, "use_attn_result")}
    return d


def _hook_shape(model: Any, name: str, d: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of ``name``'s activation for these inputs, or None when it does not fire."""
    stack, rest = name.split(".", 1)
    site = rest.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 1)[0]
    if stack in ("encoder", "projector") and not d["enc"]:
        return None
    if site == "hook_result" and not d["use_result"].get(parent, False):
        return None
    if stack == "projector":
        return (d["Be"], d["P"], model.cfg.decoder.d_model)
    if stack == "encoder":
        c, B, F_ = model.cfg.encoder, d["Be"], d["F"]
        if rest in ("hook_mel",):
            return (B, c.n_mels, d["M"])
        if rest == "hook_conv1":
            return (B, c.d_model, d["M"])
        if rest == "hook_conv2":
            return (B, c.d_model, F_)
        if rest == "hook_pooled" or rest == "hook_out" or rest.startswith("ln_final."):
            F_ = d["P"]
        return _block_site_shape(site, B, F_, F_, c.d_model, c.n_heads, c.n_heads, c.d_head, c.d_mlp, parent)
    c, B, T = model.cfg.decoder, d["Bd"], d["T"]
    if B == 0:
        return None
    if rest == "hook_logits":
        return (B, T, c.d_vocab)
    cross = ".cross_attn." in name
    if cross and site in ("hook_k", "hook_v") and d["X"] == 0:
        return None
    return _block_site_shape(
        site,
        B,
        T,
        d["X"] if cross else T,
        c.d_model,
        c.n_heads,
        c.n_heads if cross else c.n_kv_heads,
        c.d_head,
        c.d_mlp,
        parent,
    )


def _block_site_shape(
    site: str, B: int, Q: int, K: int, d_model: int, H: int, Hkv: int, dh: int, d_mlp: int, parent: str
) -> tuple[int, ...]:
    if site in ("hook_q", "hook_z", "hook_rot_q"):
        return (B, Q, H, dh)
    if site in ("hook_k", "hook_v", "hook_rot_k"):
        return (B, K, Hkv, dh)
    if site == "hook_result":
        return (B, Q, H, d_model)
    if site in ("hook_attn_scores", "hook_pattern"):
        return (B, H, Q, K)
    if site in ("hook_pre", "hook_post", "hook_pre_linear") and parent.endswith("mlp"):
        return (B, Q, d_mlp)
    if site == "hook_scale":
        return (B, Q, 1)
    return (B, Q, d_model)


def names_filter_fn(names_filter: Any) -> Callable[[str], bool]:
    """TransformerLens's ``names_filter`` (None, a name, a list of names or a predicate) as a predicate."""
    if names_filter is None:
        return lambda n: True
    if isinstance(names_filter, str):
        return lambda n: n == names_filter
    if isinstance(names_filter, (list, tuple, set)):
        allowed = set(names_filter)
        return lambda n: n in allowed
    if callable(names_filter):
        return names_filter
    raise ValueError(f"names_filter must be None, a hook name, a list of names or a function, got {names_filter!r}")


def as_slice(s: Any) -> Slice | None:
    """``pos_slice`` / ``frame_slice`` as a TransformerLens ``Slice`` (None: keep every position)."""
    # As TransformerLens's run_with_cache: an int keeps its axis (Slice.unwrap makes it [n]).
    return None if s is None else Slice.unwrap(s)


def _sliced_len(sl: Slice, n: int) -> int:
    return sl.apply(torch.empty(n, 0), dim=0).shape[0] if sl.mode != "int" else 1


__all__ = [
    "CacheSizeEstimate",
    "as_slice",
    "estimate_cache_size",
    "names_filter_fn",
    "patterns_kept_as_scores",
    "position_axes",
]
