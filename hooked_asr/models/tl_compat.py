"""TransformerLens parity for encoder-decoder models: what a TL user reaches for first.

:class:`TLCompatMixin` is a base of :class:`~hooked_asr.models.base.HookedEncoderDecoder`, so
every model (Whisper, Qwen2-Audio) has:

* ``run_with_cache(..., pos_slice=, frame_slice=, device=, dtype=, incl_bwd=, return_type=)``:
  TL's arguments and, as HookedTransformer, an :class:`ActivationCache` back
  (``return_cache_object=False``: a plain dict); ``pos_slice`` slices decoder token positions,
  ``frame_slice`` encoder frame positions; ``device="cpu"`` offloads; ``dtype`` stores in
  another precision. The cache's size is estimated before anything runs
  (:meth:`estimate_cache_size`) and a warning names the largest hooks when it exceeds
  ``cache_warn_bytes``.
* ``run_with_hooks(..., return_type="logits" | "loss" | None | callable)``: ``"loss"`` is
  the mean next-token cross-entropy over the decoder tokens, a scalar, so
  ``run_with_cache(..., incl_bwd=True, return_type="loss")`` caches gradients (``*_grad``).
* ``cfg.device`` / ``cfg.dtype`` (kept current by ``.to``), ``cfg.n_layers`` / ``n_heads`` /
  ``d_head`` / ``d_model`` of the decoder. TransformerLens's ``head_detector`` and ``patching``
  functions still cannot run on these models as they stand: they call ``model(tokens)`` with
  text alone (an ASR decoder needs the audio too) and read decoder-only names
  (``blocks.{l}.attn.hook_pattern``); ``hooked_asr.circuits.detect_heads`` and
  ``hooked_asr.patching`` are their audio-aware versions.
* ``to_tokens`` / ``to_str_tokens`` / ``to_string`` / ``to_single_token``,
  ``tokens_to_residual_directions``.
* ``set_use_attn_result``; weights stacked per stack and attention kind
  (``model.weights("decoder", "cross_attn").W_Q`` ``[layer, head, d_model, d_head]``,
  ``.QK`` / ``.OV`` as TL's ``FactoredMatrix``); the TL-named properties ``W_Q, W_K, W_V, W_O,
  b_*``, ``QK``, ``OV`` are the decoder's self-attention, ``W_E, W_U, W_pos, W_in, W_out`` the
  decoder's.

Grouped-query attention (Qwen2-Audio's decoder): key/value weights are repeated to one per
query head in every stacked view, so index ``[l, h]`` is query head ``h``'s.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens.FactoredMatrix import FactoredMatrix

from hooked_asr.models.activation_cache import ActivationCache
from hooked_asr.models.cache_size import (
    CacheSizeEstimate,
    as_slice,
    names_filter_fn,
    estimate_cache_size,
    patterns_kept_as_scores,
    position_axes,
)

ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")


class AttentionWeights:
    """One stack's attention weights of one kind, stacked over layers (lazily, on access).

    ``W_Q, W_K, W_V: [layer, head, d_model, d_head]``, ``W_O: [layer, head, d_head, d_model]``,
    ``b_Q, b_K, b_V: [layer, head, d_head]``, ``b_O: [layer, d_model]``; biases a model lacks
    are zeros. ``QK = W_Q W_K^T`` and ``OV = W_V W_O`` are ``FactoredMatrix [layer, head, d_model, d_model]``.
    """

    def __init__(self, model: Any, stack: str, kind: str):
        model.attention(stack, 0, kind)  # validates stack and kind
        self.model, self.stack, self.kind = model, stack, kind

    def __getattr__(self, name: str) -> Any:
        if name in ATTN_WEIGHTS:
            return self.model.stacked_attn_weight(name, self.stack, self.kind)
        raise AttributeError(f"{name!r}: attention weights are {list(ATTN_WEIGHTS)} and QK, OV")

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q W_K^T`` ``[layer, head, d_model, d_model]`` (nothing ``d_model x d_model`` is materialised)."""
        return self.circuit("QK")

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V W_O`` ``[layer, head, d_model, d_model]``."""
        return self.circuit("OV")

    def circuit(self, which: str, layer: int | None = None, head: int | None = None) -> FactoredMatrix:
        """``"QK"`` (``W_Q W_K^T``) or ``"OV"`` (``W_V W_O``) of every layer ``[layer, head, d_model,
        d_model]``, of one layer ``[head, ...]`` or of one head ``[d_model, d_model]``: the one place
        these circuits are built (``model.QK``, ``hooked_asr.circuits.QK`` / ``OV`` read it)."""
        if which not in ("QK", "OV"):
            raise ValueError(f"circuit must be 'QK' or 'OV', got {which!r}")
        a, b = ("W_Q", "W_K") if which == "QK" else ("W_V", "W_O")
        if layer is None:
            A, B = getattr(self, a), getattr(self, b)
        else:
            A, B = (self.model.attn_weight(n, self.stack, layer, self.kind) for n in (a, b))
        if head is not None:
            n = A.shape[-3]
            if not 0 <= head < n:
                raise ValueError(f"head {head} does not exist: the {self.stack} {self.kind} has {n} heads (0-{n - 1})")
            A, B = A[..., head, :, :], B[..., head, :, :]
        return FactoredMatrix(A.detach(), (B.transpose(-1, -2) if which == "QK" else B).detach())

    def __repr__(self) -> str:
        return f"AttentionWeights({self.stack}, {self.kind})"


class TLCompatMixin:
    """TransformerLens-parity methods; see the module docstring. Needs ``hook_dict``, ``cfg``,
    ``n_layers``, ``tokenizer``, ``forward`` and HookedRootModule's ``hooks``."""

    cache_warn_bytes: int = 4 * 2**30

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """nn.Module's ``.to`` / ``.cuda`` / ``.half`` ..., then ``cfg.device`` and ``cfg.dtype`` say
        where the weights now are (TransformerLens's utilities read them there)."""
        out = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        cfg, embed = getattr(self, "cfg", None), getattr(getattr(self, "decoder", None), "W_E", None)
        if cfg is not None and isinstance(embed, torch.Tensor):
            cfg.device, cfg.dtype = str(embed.device), embed.dtype
        return out

    # ---- attention modules and weights ---------------------------------------------------
    def attention_kinds(self, stack: str = "decoder") -> list[str]:
        """The attention kinds ``stack`` has: ``["attn"]`` or ``["attn", "cross_attn"]``."""
        if stack not in self.n_layers:
            raise ValueError(f"unknown stack {stack!r}; this model has {sorted(self.n_layers)}")
        return [k for k in ("attn", "cross_attn") if f"{stack}.blocks.0.{k}.hook_z" in self.hook_dict]

    def attention(self, stack: str, layer: int, kind: str = "attn") -> Any:
        """The attention module whose hooks are ``{stack}.blocks.{layer}.{kind}.hook_*``."""
        if kind not in ("attn", "cross_attn"):
            raise ValueError(f"attention kind must be 'attn' or 'cross_attn', got {kind!r}")
        kinds = self.attention_kinds(stack)
        n = self.n_layers[stack]
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} does not exist: the {stack} has {n} blocks (0-{n - 1})")
        if kind not in kinds:
            raise ValueError(f"the {stack} of this model has no {kind!r} attention; it has {kinds}")
        return self.get_submodule(f"{stack}.blocks.{layer % n}.{kind}")

    def attn_weight(self, name: str, stack: str = "decoder", layer: int = 0, kind: str = "attn") -> torch.Tensor:
        """One layer's attention weight ``[head, ...]``, key/value heads repeated per query head
        (grouped-query attention), a missing bias as zeros."""
        if name not in ATTN_WEIGHTS:
            raise ValueError(f"unknown attention weight {name!r}; one of {list(ATTN_WEIGHTS)}")
        attn = self.attention(stack, layer, kind)
        w = getattr(attn, name)
        if w is None:  # a bias this architecture lacks (Whisper's b_K, Qwen2's b_O)
            shape = (attn.n_kv_heads, attn.d_head) if name == "b_K" else (attn.W_O.shape[-1],)
            w = torch.zeros(shape, dtype=attn.W_O.dtype, device=attn.W_O.device)
        if name in ("W_K", "W_V", "b_K", "b_V") and attn.n_kv_heads != attn.n_heads:
            w = w.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=0)
        return w

    def stacked_attn_weight(self, name: str, stack: str = "decoder", kind: str = "attn") -> torch.Tensor:
        """``attn_weight`` of every layer stacked: ``W_Q -> [layer, head, d_model, d_head]``."""
        return torch.stack([self.attn_weight(name, stack, l, kind) for l in range(self.n_layers[stack])])

    def mlp_weight(self, name: str, stack: str = "decoder", layer: int = 0) -> torch.Tensor:
        """One MLP weight: ``W_in / W_gate [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``,
        ``b_in [d_mlp]``, ``b_out [d_model]`` (zeros where the MLP has no bias, as Qwen2's)."""
        if name not in ("W_in", "W_gate", "W_out", "b_in", "b_out"):
            raise ValueError(f"unknown MLP weight {name!r}; one of W_in, W_gate, W_out, b_in, b_out")
        n = self.n_layers.get(stack)
        if n is None or not -n <= layer < n:
            raise ValueError(f"no MLP at {stack} layer {layer}; the model has {dict(self.n_layers)} blocks")
        mlp = self.get_submodule(f"{stack}.blocks.{layer % n}.mlp")
        w = getattr(mlp, name, None)
        if w is None:
            if name.startswith("W_"):
                raise ValueError(f"this MLP ({type(mlp).__name__}) has no {name}")
            w = mlp.W_out.new_zeros(mlp.W_out.shape[0] if name == "b_in" else mlp.W_out.shape[1])
        return w

    def weights(self, stack: str = "decoder", kind: str = "attn") -> AttentionWeights:
        """``model.weights("decoder", "cross_attn").W_Q``, ``.QK``, ``.OV`` (see :class:`AttentionWeights`)."""
        return AttentionWeights(self, stack, kind)

    W_Q = property(
        lambda self: self.stacked_attn_weight("W_Q"), doc="decoder self-attention [layer, head, d_model, d_head]"
    )
    W_K = property(
        lambda self: self.stacked_attn_weight("W_K"), doc="decoder self-attention [layer, head, d_model, d_head]"
    )
    W_V = property(
        lambda self: self.stacked_attn_weight("W_V"), doc="decoder self-attention [layer, head, d_model, d_head]"
    )
    W_O = property(
        lambda self: self.stacked_attn_weight("W_O"), doc="decoder self-attention [layer, head, d_head, d_model]"
    )
    b_Q = property(lambda self: self.stacked_attn_weight("b_Q"), doc="decoder self-attention [layer, head, d_head]")
    b_K = property(lambda self: self.stacked_attn_weight("b_K"), doc="decoder self-attention [layer, head, d_head]")
    b_V = property(lambda self: self.stacked_attn_weight("b_V"), doc="decoder self-attention [layer, head, d_head]")
    b_O = property(lambda self: self.stacked_attn_weight("b_O"), doc="decoder self-attention [layer, d_model]")
    QK = property(
        lambda self: self.weights("decoder", "attn").QK, doc="decoder self-attention W_Q W_K^T (FactoredMatrix)"
    )
    OV = property(
        lambda self: self.weights("decoder", "attn").OV, doc="decoder self-attention W_V W_O (FactoredMatrix)"
    )

    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        return self.decoder.W_E

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.decoder.W_U

    @property
    def W_pos(self) -> Float[torch.Tensor, "n_ctx d_model"]:
        if not hasattr(self.decoder, "W_pos"):
            raise AttributeError("this decoder has rotary positions, no W_pos")
        return self.decoder.W_pos

    @property
    def W_in(self) -> Float[torch.Tensor, "layer d_model d_mlp"]:
        return torch.stack([self.mlp_weight("W_in", "decoder", l) for l in range(self.n_layers["decoder"])])

    @property
    def W_out(self) -> Float[torch.Tensor, "layer d_mlp d_model"]:
        return torch.stack([self.mlp_weight("W_out", "decoder", l) for l in range(self.n_layers["decoder"])])

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute and hook every attention's per-head ``hook_result [batch, pos, head, d_model]``
        (memory: ``n_heads`` times ``hook_attn_out``). The circuit helpers compute head results
        from ``hook_z`` on demand and do not need this."""
        for stack in self.n_layers:
            for kind in self.attention_kinds(stack):
                for l in range(self.n_layers[stack]):
                    self.attention(stack, l, kind).use_attn_result = bool(use_attn_result)

    # ---- tokens ----------------------------------------------------------------------------
    def _tok(self) -> Any:
        if getattr(self, "tokenizer", None) is None:
            raise ValueError("this model has no tokenizer; load it with one (from_pretrained / load_model) or pass ids")
        return self.tokenizer

    def _prompt_ids(self, language: str | None = None, task: str = "transcribe") -> list[int]:
        """The text prompt ``to_tokens`` prepends: Whisper's ``sot_sequence(language, task)``, with
        ``language=None`` meaning ``'en'`` on multilingual checkpoints (no language token on English-only
        ones); Qwen2 has no BOS (nothing)."""
        check = getattr(self, "_check_language_task", None)
        if check is not None:
            check(language, task)
        if not hasattr(self, "sot_sequence"):
            return []
        multilingual = bool(getattr(self.cfg, "is_multilingual", False) and getattr(self.cfg, "lang_to_id", None))
        return list(self.sot_sequence((language or "en") if multilingual else language, task))

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool = True,
        move_to_device: bool = True,
        *,
        language: str | None = None,
        task: str = "transcribe",
    ) -> Int[torch.Tensor, "batch pos"]:
        """Text -> ``[batch, pos]`` ids. ``prepend_bos`` prepends the model's text prompt (Whisper:
        ``sot_sequence(language, task)``: ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` on a
        multilingual checkpoint, where ``language=None`` means ``'en'``; English-only ones have no language
        or task token and take ``language`` None / ``'en'``; Qwen2 has no BOS, nothing is added). A batch of
        texts of different lengths raises: pad them yourself, positions matter to every method here."""
        texts = [input] if isinstance(input, str) else list(input)
        tok = self._tok()
        prefix = self._prompt_ids(language, task) if prepend_bos else []
        if not prepend_bos:
            self._prompt_ids(language, task)  # a bad language / task still says so
        rows = [prefix + list(tok.encode(t)) for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise ValueError(f"texts give {[len(r) for r in rows]} tokens: pass them one at a time or pad them")
        out = torch.tensor(rows, dtype=torch.long)
        return out.to(self.device) if move_to_device else out

    def to_string(self, tokens: Any, *, language: str | None = None, task: str = "transcribe") -> str | list[str]:
        """Ids -> text (special tokens shown). A ``[batch, pos]`` tensor or a list of lists gives a list.
        ``language`` / ``task`` are checked as in :meth:`to_tokens` (the text of ids does not depend on them)."""
        self._prompt_ids(language, task)
        t = torch.as_tensor(tokens) if not isinstance(tokens, torch.Tensor) else tokens
        if t.ndim == 2:
            return [self.to_string(row, language=language, task=task) for row in t]
        return self._tok().decode([int(i) for i in t.reshape(-1).tolist()], skip_special_tokens=False)

    def to_str_tokens(
        self, input: str | Any, prepend_bos: bool = True, *, language: str | None = None, task: str = "transcribe"
    ) -> list[str]:
        """Each token as its own string (text is tokenised first, with the prompt of ``language`` /
        ``task`` if ``prepend_bos``: see :meth:`to_tokens` for the default on multilingual models)."""
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos, language=language, task=task)[0]
        else:
            self._prompt_ids(language, task)
            ids = torch.as_tensor(input)
        if ids.ndim == 2:
            if ids.shape[0] != 1:
                raise ValueError(f"to_str_tokens takes one sequence, got a batch of {ids.shape[0]}")
            ids = ids[0]
        tok = self._tok()
        conv = getattr(tok, "token_to_string", None) or (lambda i: tok.decode([i], skip_special_tokens=False))
        return [conv(int(i)) for i in ids.reshape(-1).tolist()]

    def to_single_token(self, string: str, *, language: str | None = None, task: str = "transcribe") -> int:
        """The id of a string that is exactly one token (e.g. ``" the"``, leading space included).
        ``language`` / ``task`` are checked as in :meth:`to_tokens` (a text token's id does not depend on them)."""
        self._prompt_ids(language, task)
        ids = self._tok().encode(string)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens {ids}, not one; pick a single-token string or pass ids")
        return int(ids[0])

    def tokens_to_residual_directions(self, tokens: str | int | torch.Tensor) -> Float[torch.Tensor, "... d_model"]:
        """``W_U[:, tokens]`` moved to the last axis: a token's unembedding direction.

        Our weights are not LN-folded: the logit of a normalised residual ``x`` is
        ``(x_centred / s * w + b) . W_U[:, t]``, so the direction a component is read along is
        ``w * W_U[:, t]`` (what ``ActivationCache.logit_attrs`` uses) plus the bias term ``b . W_U[:, t]``.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        t = torch.as_tensor(tokens, device=self.W_U.device)
        return self.W_U[:, t].movedim(0, -1)

    # ---- running ---------------------------------------------------------------------------
    def _bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        return dict(inspect.signature(self.forward).bind(*args, **kwargs).arguments)

    def _decoder_tokens(self, inputs: dict[str, Any]) -> torch.Tensor:
        for key in ("decoder_input_ids", "input_ids"):
            if inputs.get(key) is not None:
                return inputs[key]
        raise ValueError("return_type='loss' needs the decoder's tokens (decoder_input_ids / input_ids)")

    def _run(self, inputs: dict[str, Any], return_type: Any, loss_per_token: bool = False) -> Any:
        logits = self.forward(**inputs)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if return_type == "loss":
            return _loss(logits, self._decoder_tokens(inputs), loss_per_token)
        if return_type == "both":
            return logits, _loss(logits, self._decoder_tokens(inputs), loss_per_token)
        if callable(return_type):
            return return_type(logits)
        raise ValueError(
            f"return_type must be 'logits', 'loss', 'both', None or a function of the logits, got {return_type!r}"
        )

    def run_with_hooks(  # type: ignore[override]
        self,
        *model_args: Any,
        fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        bwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_type: Any = "logits",
        loss_per_token: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """Run the forward with hooks (removed afterwards, even on error).

        ``return_type``: ``"logits"`` (default), ``"loss"`` (mean next-token cross-entropy of
        the decoder tokens, ``-mean_t log p(tok_{t+1} | tok_<=t)``; per token with
        ``loss_per_token``), ``"both"``, ``None``, or a function ``logits -> tensor``.
        """
        inputs = self._bind(model_args, model_kwargs)
        with self.hooks(list(fwd_hooks), list(bwd_hooks), reset_hooks_end, clear_contexts):
            return self._run(inputs, return_type, loss_per_token)

    def run_with_cache(  # type: ignore[override]
        self,
        *model_args: Any,
        names_filter: Any = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        pos_slice: Any = None,
        frame_slice: Any = None,
        dtype: torch.dtype | None = None,
        return_cache_object: bool = True,
        return_type: Any = "logits",
        loss_per_token: bool = False,
        **model_kwargs: Any,
    ) -> tuple[Any, Any]:
        """TransformerLens's ``run_with_cache`` for an encoder-decoder: returns ``(output, cache)``.

        ``cache`` is an :class:`hooked_asr.ActivationCache` (a mapping of hook name -> tensor with
        TL's helpers plus ``stack=``), as HookedTransformer returns; ``return_cache_object=False``
        gives the plain dict.
        ``pos_slice`` keeps those decoder token positions and ``frame_slice`` those encoder
        frames (int, ``(start, stop[, step])``, list of indices or TL ``Slice``), on each
        activation's own position axes (:func:`position_axes`); ``device`` stores the cache
        there (``"cpu"`` offloads from an accelerator), ``dtype`` casts it. ``incl_bwd=True``
        needs a scalar output (``return_type="loss"`` or a metric) and also caches ``name_grad``.
        An :class:`ActivationCache` that keeps both an attention's scores and its pattern stores
        the scores only and rebuilds the pattern on access, bit for bit (``cache.derived``).
        """
        self._check_names_filter(names_filter)  # a misspelt name is an error, not an empty cache
        inputs = self._bind(model_args, model_kwargs)
        estimate = self.estimate_cache_size(
            names_filter=names_filter,
            pos_slice=pos_slice,
            frame_slice=frame_slice,
            dtype=dtype,
            incl_bwd=incl_bwd,
            return_cache_object=return_cache_object,
            device=device,
            **inputs,
        )
        if estimate.total_bytes > self.cache_warn_bytes:
            warnings.warn(
                f"run_with_cache will build a large {estimate}; keep fewer hooks (names_filter), fewer positions "
                f"(pos_slice / frame_slice), a smaller dtype, or offload with device='cpu' "
                f"(threshold: model.cache_warn_bytes = {self.cache_warn_bytes})",
                stacklevel=2,
            )
        keep = names_filter_fn(names_filter)
        pslice, fslice = as_slice(pos_slice), as_slice(frame_slice)
        cache: dict[str, torch.Tensor] = {}
        derived: dict[str, str] = {}

        def save(tensor: torch.Tensor, hook: Any, is_backward: bool = False) -> None:
            if not is_backward and hook.name in derived:
                scores = cache.get(derived[hook.name])
                if scores is not None and scores.dtype == tensor.dtype:
                    return  # rebuilt from its scores on access (ActivationCache)
                del derived[hook.name]  # autocast gave scores another dtype: keep the pattern itself
            t = tensor.detach()
            axes = position_axes(hook.name)
            # Slice before moving or casting, so only what is kept is copied.
            for kind, sl in (("token", pslice), ("frame", fslice)):
                if sl is not None and kind in axes and t.ndim >= -axes[kind]:
                    t = sl.apply(t, dim=axes[kind])
            t = t.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else t
            if remove_batch_dim and t.ndim > 0 and t.shape[0] == 1:
                t = t[0]
            cache[hook.name + ("_grad" if is_backward else "")] = t

        names = [n for n in self.hook_dict if keep(n)]
        fwd = [(n, save) for n in names]
        bwd = [(n, lambda t, hook: save(t, hook, True)) for n in names] if incl_bwd else []
        with self.hooks(fwd, bwd, reset_hooks_end, clear_contexts):
            if return_cache_object:
                # Exact only when nothing but our save sees the scores and the pattern (a user hook
                # could change either between the two).
                derived.update(
                    {
                        p: s
                        for p, s in patterns_kept_as_scores(names, fslice, dtype, device).items()
                        if len(self.hook_dict[p]._forward_hooks) == len(self.hook_dict[s]._forward_hooks) == 1
                    }
                )
            out = self._run(inputs, return_type, loss_per_token)
            if incl_bwd:
                scalar = out[1] if return_type == "both" else out
                if not isinstance(scalar, torch.Tensor) or scalar.numel() != 1:
                    raise ValueError(
                        "incl_bwd=True needs a scalar output to differentiate: pass return_type='loss' or a "
                        f"metric function logits -> scalar (got return_type={return_type!r})"
                    )
                scalar.backward()
        if return_cache_object:
            return out, ActivationCache(cache, self, has_batch_dim=not remove_batch_dim, derived=derived)
        return out, cache

    # ---- cache size --------------------------------------------------------------------------
    def estimate_cache_size(
        self,
        *model_args: Any,
        names_filter: Any = None,
        pos_slice: Any = None,
        frame_slice: Any = None,
        dtype: torch.dtype | None = None,
        incl_bwd: bool = False,
        return_cache_object: bool | None = None,
        device: str | torch.device | None = None,
        **model_kwargs: Any,
    ) -> CacheSizeEstimate:
        """Bytes ``run_with_cache`` would store for these inputs, from the config and the input
        shapes alone (nothing runs); see :mod:`hooked_asr.models.cache_size`. ``return_cache_object``
        defaults to ``run_with_cache``'s own default."""
        if return_cache_object is None:
            return_cache_object = inspect.signature(self.run_with_cache).parameters["return_cache_object"].default
        return estimate_cache_size(
            self,
            self._bind(model_args, model_kwargs),
            names_filter,
            pos_slice,
            frame_slice,
            dtype,
            incl_bwd,
            return_cache_object,
            device,
        )


def _loss(logits: torch.Tensor, tokens: torch.Tensor, per_token: bool) -> torch.Tensor:
    """Next-token cross-entropy: ``-log p(tok_{t+1} | tok_<=t)``, mean over positions and batch."""
    tokens = tokens.to(logits.device)
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return -lp if per_token else -lp.mean()


__all__ = ["AttentionWeights", "TLCompatMixin"]
