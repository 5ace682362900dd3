"""int8 dynamic quantization of a hooked model's matrix weights: a fast path for long
transcription runs (monitors, hallucination studies over hours of audio). Never the default.

    >>> model = hooked_asr.load_model("whisper-base", quantize="int8")
    >>> model.transcribe("lecture.wav").text                # 0.6x (base) to 0.73x (tiny) fp32's time
    >>> with model.hooks(fwd_hooks=[("decoder.blocks.0.hook_resid_post", fn)]):
    ...     model.transcribe("lecture.wav")                 # hooks fire as on the fp32 model

Measured (one thread, one 28-s window of espeak speech, interleaved medians): transcription
takes 0.73x fp32's time on tiny.en and 0.60x on base (encoder alone 0.79x / 0.53x; the
float32 attention over 1500 frames is most of tiny's encoder). On 70 s of long-form speech the
int8 transcript is WER 0.05 from faster-whisper's int8 one (``benchmarks/bench_int8.py``).

What changes: every linear map of the blocks (attention ``W_Q, W_K, W_V, W_O``, self and cross;
MLP ``W_in, W_out``) and the unembedding ``W_U = W_E^T`` run as int8 GEMMs. Each weight ``W``
(as the ``[out, in]`` matrix of the product) is quantized once, symmetrically per output
channel, ``q_o = round(W_o / s_o)`` with ``s_o = max|W_o| / 127.5``; each product quantizes its
input ``x`` per call to 8 bits (scale and zero point from ``min(x), max(x)``; 7 bits of range,
``reduce_range``, as PyTorch's own dynamic ``Linear`` does, so AVX2 CPUs without VNNI cannot
saturate their 16-bit accumulators) and computes ``y = s_x s_o (q_x - z_x) q_o + b`` in
fbgemm's int8 kernel. Convolutions, layer norms, embeddings lookups, attention scores and
everything the hooks see stay float32.

Hooks stay live: every ``HookPoint`` fires with the same names and shapes, and an edit made by
a hook changes what follows. **But activations differ from the fp32 model's** (relative error
of order 1e-2 per product), so analyses (lenses, patching, probes, SAEs, attribution) must run
on the fp32 model; this path is for transcripts, monitors and hook-based counts over long audio.
Weights stay in memory in float32 beside their int8 copies (every non-product use, e.g. the
embedding lookup or ``model.W_E``, reads them), so memory grows by about a quarter; editing a
quantized weight in place raises (the int8 copy would go stale): edit the fp32 model, then
quantize.

Kernel choice, measured on this project's CPU (AVX-512 VNNI, one thread, ms per product):
``torch.ops.quantized.linear_dynamic`` (fbgemm) against ``torch._int_mm`` with hand-quantized
rows, and fp32 ``addmm``::

    rows x in x out          fp32    fbgemm   _int_mm
    1 x 384 x 1152           0.026   0.015    0.025    (a decoder step's q/k/v)
    1 x 384 x 51864          12.2    1.6      10.7     (a greedy step's unembedding)
    5 x 384 x 51864          34.1    10.2     10.4     (a beam-5 step's unembedding)
    1500 x 384 x 1536        60.8    7.7      10.7     (an encoder MLP)

fbgemm is fastest everywhere, so it is used. Its quantized-tensor constructors are deprecated
in PyTorch (``torch.quantize_per_channel`` warns); if a later release removes them,
:func:`quantize_int8` raises saying so rather than falling back silently.

Mechanism: each quantized weight is an :class:`Int8Weight`, a ``torch.Tensor`` subclass holding
the float32 values (so every component's code runs unchanged) and the packed int8 matrices for
the exact views the components multiply by; ``torch.addmm``, ``matmul``/``@`` and
``F.linear`` on such a view run the int8 kernel, anything else runs on the float32 values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZATIONS = ("int8",)


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


# fbgemm's 8-bit activations: full range where the CPU has VNNI (32-bit accumulation); 7 bits
# elsewhere, as PyTorch's dynamic Linear, so AVX2 without VNNI cannot saturate its 16-bit sums.
_REDUCE_RANGE = not _has_vnni()
_ROWWISE_MIN_ROWS = 32  # from this many rows a product quantizes its input per row (see _linear_int8)
# In-place by name only: they change no values.
_NOT_EDITS = {"requires_grad_", "share_memory_"}
_OTHER, _PRODUCT, _EDIT = 0, 1, 2
_KIND: dict[Any, int] = {}
# The products the components compute with their weights (see hooked_asr.components).
_MATMULS = {
    torch.addmm,
    torch.matmul,
    torch.mm,
    torch.Tensor.__matmul__,
    torch.Tensor.matmul,
    torch.Tensor.mm,
    F.linear,
}


def _classify(func: Callable) -> int:
    if func in _MATMULS:
        return _PRODUCT
    name = getattr(func, "__name__", "")
    if name == "__setitem__" or (name.endswith("_") and not name.endswith("__") and name not in _NOT_EDITS):
        return _EDIT
    return _OTHER


def _key(L: torch.Tensor) -> tuple:
    """Which view of a weight ``L`` (as the ``[out, in]`` matrix of ``x L^T``) is."""
    return tuple(L.shape), tuple(L.stride()), L.storage_offset()


def _lhs_key(V: torch.Tensor) -> tuple:
    """:func:`_key` of ``V^T`` without building it: ``V`` is the right operand of ``x @ V``."""
    return (V.shape[1], V.shape[0]), (V.stride(1), V.stride(0)), V.storage_offset()


class Int8Weight(torch.Tensor):
    """A float32 weight that multiplies in int8 (see the module docstring).

    ``_packs`` maps :func:`_key` of each product view to fbgemm's packed int8 weight; views of
    this tensor (``permute``, ``reshape``, ``.T``) share it, so the product finds its pack."""

    _packs: dict[tuple, Any]

    @staticmethod
    def __new__(cls, data: torch.Tensor, packs: dict[tuple, Any]) -> "Int8Weight":
        t = torch.Tensor._make_subclass(cls, data, False)
        t._packs = packs
        return t

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        # Runs on every op that touches a quantized weight (a few hundred per decoder step): one
        # dict lookup classifies the op, and nothing below re-enters this method.
        kwargs = kwargs or {}
        kind = _KIND.get(func)
        if kind is None:
            kind = _KIND[func] = _classify(func)
        with torch._C.DisableTorchFunctionSubclass():
            if kind == _PRODUCT:
                out = _int8_product(func, args, kwargs)
                if out is not None:
                    return out
            src = args[0] if args and isinstance(args[0], Int8Weight) else None
            if src is None:
                return func(*args, **kwargs)
            if kind == _EDIT:
                raise RuntimeError(
                    f"{getattr(func, '__name__', func)} would edit a weight of an int8-quantized model in place, "
                    "leaving its int8 copy stale: edit the float32 model (load_model without quantize=), then quantize it"
                )
            out = func(*args, **kwargs)
            if type(out) is torch.Tensor and out.dtype == src.dtype and out.data_ptr() == src.data_ptr():
                return Int8Weight(out, src._packs)  # a view (permute, reshape, .T, detach) keeps the packs
            return out

    def weight_product(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor | None:
        """``x @ self + b`` in int8 when ``self`` is a packed ``[in, out]`` product view (else ``None``):
        what ``torch.addmm(b, x, self)`` computes here, called by ``components.products.product``
        without the Python dispatch of an op on a subclass (~40 us a product, ~33 per decoder step)."""
        if isinstance(b, Int8Weight):
            return None
        pack = self.__dict__.get("_right_pack", False)  # this view's pack, looked up once (views are kept)
        if pack is False:
            with torch._C.DisableTorchFunctionSubclass():
                pack = self._right_pack = self._packs.get(_lhs_key(self)) if self.dim() == 2 else None
        if pack is None or not _int8_input(x):
            return None
        with torch._C.DisableTorchFunctionSubclass():
            y = _linear_int8(x.reshape(-1, x.shape[-1]), pack)
            if b is not None:
                y = y.add_(b)
            return y.view(*x.shape[:-1], y.shape[-1])

    def __repr__(self) -> str:
        with torch._C.DisableTorchFunctionSubclass():
            return f"Int8Weight({torch.Tensor.__repr__(self)})"


def _int8_product(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The product in int8 when its weight operand is a packed view, else ``None`` (float32)."""
    linear = _linear_int8
    if func is torch.addmm:
        if len(args) != 3 or kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1 or "out" in kwargs:
            return None
        bias, x, W = args
        pack = _pack_of(W, right=True, other=x)
        return None if pack is None or isinstance(bias, Int8Weight) else linear(x, pack).add_(bias)
    if func is F.linear:
        x, W = args[0], args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        pack = _pack_of(W, right=False, other=x)
        if pack is None:
            return None
        y = linear(x, pack)
        return y if bias is None else y.add_(bias)
    if len(args) != 2 or kwargs:
        return None
    a, b = args
    pack = _pack_of(b, right=True, other=a)
    if pack is not None and a.dim() >= 1:
        return linear(a, pack)
    pack = _pack_of(a, right=False, other=b)
    if pack is not None and b.dim() == 2:  # W @ y = (y^T W^T)^T
        return linear(b.T, pack).T
    return None


def _pack_of(W: Any, right: bool, other: Any) -> Any:
    """The pack for the product view ``W`` (call with subclass dispatch disabled)."""
    if not isinstance(W, Int8Weight) or W.dim() != 2 or not _int8_input(other):
        return None
    return W._packs.get(_lhs_key(W) if right else _key(W))


def _int8_input(x: Any) -> bool:
    """Whether ``x`` may be the activation of an int8 product: a float32 CPU tensor that needs no
    gradient (autograd has no int8 backward: a gradient through the weights' product runs in float32),
    and not itself a quantized weight."""
    return (
        isinstance(x, torch.Tensor)
        and not isinstance(x, Int8Weight)
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not x.requires_grad
    )


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous() if not x.is_contiguous() else x


class _Pack:
    """One weight's int8 forms: fbgemm's packed matrix (few rows) and ``q^T`` with its scales (many rows)."""

    __slots__ = ("fbgemm", "q_t", "scale")

    def __init__(self, fbgemm: Any, q_t: torch.Tensor, scale: torch.Tensor):
        self.fbgemm, self.q_t, self.scale = fbgemm, q_t, scale


def _quantized_linear_pack(L: torch.Tensor) -> _Pack:
    """The int8 forms of ``L`` for ``x L^T``: per-output-channel symmetric scales, computed
    as PyTorch's ``per_channel_dynamic_qconfig`` observer does (``max|W_o| / 127.5``, at least
    float32's eps), so a few-row product equals ``torch.ao`` dynamic ``Linear``'s on the same weight."""
    w = L.detach().float().contiguous()
    scale = (w.abs().amax(dim=1) / 127.5).clamp_min(torch.finfo(torch.float32).eps)
    with warnings.catch_warnings():  # the quantized-tensor constructors warn that they are deprecated
        warnings.simplefilter("ignore", UserWarning)
        qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None)
    return _Pack(packed, qw.int_repr().T.contiguous(), scale)


def _linear_int8(x: torch.Tensor, pack: _Pack) -> torch.Tensor:
    """``x L^T`` in int8: per-row symmetric activations for many rows, fbgemm's per-tensor for few.

    A whole encoder window quantized with one activation scale loses its quiet frames to the
    loud ones (encoder output off by 12% RMS on tiny.en); one scale per row ``s_r = max|x_r| / 127``
    (as CTranslate2 does) keeps it at 3%. For a decoder step (one row per beam) the two coincide
    and fbgemm's kernel is the faster (1.6 ms against 10.7 ms for tiny's unembedding)."""
    rows = x.numel() // max(x.shape[-1], 1)
    if rows < _ROWWISE_MIN_ROWS:
        # the overload itself: the packet's __call__ checks every argument in Python first (~8 us)
        return torch.ops.quantized.linear_dynamic.default(_plain(x), pack.fbgemm, _REDUCE_RANGE)
    x2 = x.reshape(rows, x.shape[-1])
    # max|x_r| as max(max x_r, -min x_r) and the rounding in place: the same bits as
    # round(x / (max|x| / 127)) without two temporaries the size of x (an encoder window's MLP
    # input is 9 MB: each fresh temporary costs page faults as well as a pass).
    peak = torch.maximum(x2.amax(dim=1, keepdim=True), x2.amin(dim=1, keepdim=True).neg_())
    s = peak.clamp_min_(torch.finfo(torch.float32).tiny).div_(127.0)
    xq = x2.div(s).round_().to(torch.int8)
    y = torch._int_mm(xq, pack.q_t).to(torch.float32).mul_(s).mul_(pack.scale)
    return y.view(*x.shape[:-1], y.shape[-1])


def _product_views(name: str, W: torch.Tensor) -> list[torch.Tensor]:
    """The ``[out, in]`` matrices (views of ``W``) that the components multiply by, per weight name."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("W_Q", "W_K", "W_V") and W.dim() == 3:  # [head, d_model, d_head], used flat as [d_model, head*d_head]
        return [W.permute(1, 0, 2).reshape(W.shape[1], -1).T]
    if leaf == "W_O" and W.dim() == 3:  # [head, d_head, d_model], used as [head*d_head, d_model]
        return [W.reshape(-1, W.shape[-1]).T]
    if leaf in ("W_in", "W_out", "W_gate", "W_U_untied") and W.dim() == 2:  # [in, out]
        return [W.T]
    if name.endswith("decoder.W_E") and W.dim() == 2:  # tied unembedding: x W_E^T
        return [W]
    return []


def quantize_int8(model: nn.Module) -> nn.Module:
    """Quantize ``model``'s matrix weights to int8 in place (see the module docstring); returns it.

    Only for float32 models on the CPU. Activations then differ from the fp32 model's: never
    use a quantized model for analysis."""
    if getattr(getattr(model, "cfg", None), "extra", {}).get("quantization") == "int8":
        return model
    params = dict(model.named_parameters())
    bad = {str(p.device) for p in params.values() if p.device.type != "cpu"} | {
        str(p.dtype) for p in params.values() if p.dtype != torch.float32
    }
    if bad:
        raise ValueError(
            f"int8 quantization runs on float32 CPU models; this one has {sorted(bad)}: load it with "
            "dtype=torch.float32 on the CPU (quantize='int8' is a CPU fast path)"
        )
    if (
        "fbgemm" not in torch.backends.quantized.supported_engines
        and "x86" not in torch.backends.quantized.supported_engines
    ):
        raise RuntimeError("this PyTorch build has no fbgemm/x86 int8 kernels; quantize='int8' needs an x86 CPU build")
    if not hasattr(torch.ops.quantized, "linear_dynamic") or not hasattr(torch, "quantize_per_channel"):
        raise RuntimeError("this PyTorch release no longer has the fbgemm dynamic int8 linear; use the float32 model")
    done = 0
    with torch.no_grad():
        for name, p in params.items():
            views = _product_views(name, p.detach())
            if not views or any(v.data_ptr() != p.data_ptr() for v in views):
                continue  # no product of this weight, or its product view is a copy: stays float32
            packs = {_key(v): _quantized_linear_pack(v) for v in views}
            module_name, _, leaf = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            setattr(module, leaf, nn.Parameter(Int8Weight(p.detach(), packs), requires_grad=False))
            done += 1
    if done == 0:
        raise ValueError(f"{type(model).__name__} has no weight that quantize_int8 knows how to quantize")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and isinstance(getattr(cfg, "extra", None), dict):
        cfg.extra["quantization"] = "int8"  # so fingerprints of saved runs tell the two paths apart
    return model


def quantize(model: nn.Module, how: str | None) -> nn.Module:
    """``model`` as it is for ``how=None``, int8-quantized for ``"int8"`` (see :func:`quantize_int8`)."""
    if how is None:
        return model
    if how not in QUANTIZATIONS:
        raise ValueError(f"quantize={how!r} is not supported; use one of {QUANTIZATIONS} or None (float, the default)")
    return quantize_int8(model)


__all__ = ["Int8Weight", "QUANTIZATIONS", "quantize", "quantize_int8"]
