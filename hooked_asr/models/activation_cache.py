"""An activation cache with TransformerLens's helpers, for both stacks of an encoder-decoder.

``model.run_with_cache(..., return_cache_object=True)`` returns an :class:`ActivationCache`: TL's
method names and arguments plus ``stack="encoder" | "decoder"`` (default: the decoder). Head
results ``z_h W_O[h]`` are computed from ``hook_z`` on demand, and a pattern whose scores are
cached is rebuilt from them on access (``derived``). A block's residual stream, in forward order::

    resid_pre --ln1--> attn -> resid_mid --ln_cross--> cross_attn -> resid_mid_cross --ln2--> mlp -> resid_post

so ``resid_post[n-1] = embeds + sum_l (attn_out_l + cross_attn_out_l + mlp_out_l)``, embeds =
``hook_embed + hook_pos_embed`` (decoder) or ``hook_conv2^T + hook_pos_embed`` (encoder). Where TL
says ``mlp_input``, the cross-attention input is ``cross_input=True``. Labels are hook names or
sweep components (``decoder.blocks.3.cross_attn.head.2``, ``decoder.blocks.0.mlp.neuron.17``).
LayerNorm as TL without weight folding: ``apply_ln_to_stack`` centres each component and divides
by the cached scale (recomputed from the cached residual without ``hook_scale``); ``logit_attrs``
reads components along ``w * W_U[:, t]`` (the constant ``b . W_U[:, t]`` is a component of its own
in :func:`hooked_asr.circuits.dla.direct_logit_attribution`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from jaxtyping import Float
from transformer_lens.utilities import Slice

from hooked_asr.components.attention import pattern_from_scores
from hooked_asr.hooks import act_name

Stack = Literal["encoder", "decoder"]


def _sl(s: Any) -> Slice:
    return s if isinstance(s, Slice) else Slice(s)


class ActivationCache(Mapping):
    """A mapping of hook name -> activation, a model, and TransformerLens's cache helpers.

    >>> cache["cross_pattern", 2], cache["pattern", 0, "encoder"]   # decoder.blocks.2.cross_attn.hook_pattern, ...
    >>> heads, labels = cache.stack_head_results(return_labels=True)  # self + cross heads
    """

    def __init__(
        self,
        cache_dict: dict[str, torch.Tensor],
        model: Any,
        has_batch_dim: bool = True,
        derived: Mapping[str, str] | None = None,
    ):
        self.cache_dict, self.model, self.has_batch_dim = cache_dict, model, has_batch_dim
        # pattern name -> scores name: patterns kept as their scores, ``softmax(scores)`` on access
        # (run_with_cache stores one of the two when it can recompute the other exactly).
        self.derived: dict[str, str] = dict(derived or {})

    # ---- mapping ---------------------------------------------------------------------------
    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            # A dotted string is a hook name (reported missing below); a bare one a stack site ("logits").
            if key in self.cache_dict or key in self.derived or "." in key:
                return key
            key = (key,)
        if not isinstance(key, tuple) or not key:
            raise KeyError(f"cache keys are hook names or (site, layer[, stack]) tuples, got {key!r}")
        site = key[0]
        layer = key[1] if len(key) > 1 else None
        stack = key[2] if len(key) > 2 and key[2] is not None else "decoder"
        if layer is not None and layer < 0:
            layer = self.model.n_layers[stack] + layer
        try:
            return act_name(site, layer, stack)
        except ValueError as e:  # a KeyError, so `in` and .get() work as on a dict
            raise KeyError(str(e)) from None

    def __getitem__(self, key: Any) -> torch.Tensor:
        name = self._key(key)
        if name in self.cache_dict:
            return self.cache_dict[name]
        if name in self.derived:
            return pattern_from_scores(self.cache_dict[self.derived[name]])
        raise KeyError(
            f"'{name}' (from {key!r}) is not in the cache; run_with_cache kept {len(self)} hooks "
            f"(widen names_filter to keep it)"
        )

    def __contains__(self, key: object) -> bool:
        try:
            name = self._key(key)
        except KeyError:
            return False
        return name in self.cache_dict or name in self.derived

    def __len__(self) -> int:
        return len(self.cache_dict) + len(self.derived)

    def __iter__(self) -> Iterator[str]:
        pattern_of = {s: p for p, s in self.derived.items()}
        for name in self.cache_dict:
            yield name
            if name in pattern_of:
                yield pattern_of[name]

    def __repr__(self) -> str:
        return f"ActivationCache with {len(self)} keys ({'with' if self.has_batch_dim else 'no'} batch dim)"

    @property
    def nbytes(self) -> int:
        """Bytes the cache holds: a pattern kept as its scores costs nothing until it is read."""
        return sum(v.numel() * v.element_size() for v in self.cache_dict.values())

    def to(self, device: str | torch.device) -> "ActivationCache":
        """Move every activation to ``device`` (in place, as TransformerLens); returns ``self``."""
        self.cache_dict = {k: v.to(device) for k, v in self.cache_dict.items()}
        return self

    def remove_batch_dim(self, batch_size: int | None = None) -> "ActivationCache":
        """Drop the leading batch axis (batch of 1 only), in place; returns ``self``."""
        if not self.has_batch_dim:
            logging.warning("Tried removing batch dimension after already having removed it.")
            return self
        if batch_size is None:
            batch_size = max((v.shape[0] for v in self.cache_dict.values() if v.ndim > 0), default=1)
        if batch_size != 1:
            raise ValueError(
                f"cannot remove the batch dimension of a cache with batch size {batch_size}; "
                "use apply_slice_to_batch_dim(i) to keep one item"
            )
        self.cache_dict = {k: (v[0] if v.ndim > 0 and v.shape[0] == 1 else v) for k, v in self.cache_dict.items()}
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice: Any) -> "ActivationCache":
        """A new cache holding the selected batch items (an int drops the batch axis)."""
        if not self.has_batch_dim:
            raise ValueError("this cache has no batch dimension to slice")
        sl = _sl(batch_slice)
        return ActivationCache(
            {k: sl.apply(v, dim=0) for k, v in self.cache_dict.items()},
            self.model,
            has_batch_dim=sl.mode != "int",
            derived=self.derived,
        )

    def toggle_autodiff(self, mode: bool = False) -> None:
        """``torch.set_grad_enabled(mode)`` (global state, as in TransformerLens)."""
        logging.warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    # ---- structure ---------------------------------------------------------------------------
    def _n(self, stack: str) -> int:
        if stack not in self.model.n_layers:
            raise ValueError(f"stack must be one of {sorted(self.model.n_layers)}, got {stack!r}")
        return self.model.n_layers[stack]

    def _layer(self, layer: int | None, stack: str) -> int:
        n = self._n(stack)
        if layer is None or layer == -1:
            return n
        if not 0 <= layer <= n:
            raise ValueError(f"layer must be in [0, {n}] (or -1 / None: the {stack}'s final residual), got {layer}")
        return layer

    def _kinds(self, stack: str) -> list[str]:
        return self.model.attention_kinds(stack)

    def _partial_kinds(self, stack: str, mlp_input: bool, cross_input: bool) -> list[str]:
        """Attention sublayers of the target layer that sit before the chosen input point."""
        if mlp_input and cross_input:
            raise ValueError("pass at most one of mlp_input and cross_input")
        if cross_input and "cross_attn" not in self._kinds(stack):
            raise ValueError(f"cross_input=True: the {stack} has no cross-attention")
        return self._kinds(stack) if mlp_input else ["attn"] if cross_input else []

    def _embeds(self, stack: str) -> list[tuple[str, torch.Tensor]]:
        if stack == "decoder":
            return [(n, self[n]) for n in ("decoder.hook_embed", "decoder.hook_pos_embed") if n in self.model.hook_dict]
        pos = self["encoder.hook_pos_embed"]
        if "encoder.hook_conv2" in self.cache_dict:
            conv = self["encoder.hook_conv2"].transpose(-1, -2)
        else:  # the conv output is what resid_pre[0] holds besides the positions
            conv = self["encoder.blocks.0.hook_resid_pre"] - pos
        return [("encoder.hook_conv2", conv), ("encoder.hook_pos_embed", pos)]

    def _input_resid(self, layer: int, stack: str, mlp_input: bool, cross_input: bool) -> torch.Tensor:
        n = self._n(stack)
        if layer == n:
            return self[f"{stack}.blocks.{n - 1}.hook_resid_post"]
        if mlp_input:
            site = "hook_resid_mid_cross" if "cross_attn" in self._kinds(stack) else "hook_resid_mid"
        else:
            site = "hook_resid_mid" if cross_input else "hook_resid_pre"
        return self[f"{stack}.blocks.{layer}.{site}"]

    # ---- residual stream ---------------------------------------------------------------------
    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
        stack: Stack = "decoder",
        cross_input: bool = False,
    ) -> Any:
        """The residual stream at each block's input up to ``layer`` (TL semantics): ``resid_pre``
        of layers ``0..layer`` (``layer = n_layers``: the final ``resid_post``), with ``incl_mid``
        the mid-points too. ``apply_ln`` normalises (at the final layer each item with its own
        statistics, as a logit lens). Labels are hook names. ``[component, batch, pos, d_model]``."""
        layer = self._layer(layer, stack)
        n = self._n(stack)
        psl = _sl(pos_slice)
        mids = ["hook_resid_mid"] + (["hook_resid_mid_cross"] if "cross_attn" in self._kinds(stack) else [])
        names: list[str] = []
        for l in range(layer + 1):
            if l == n:
                names.append(f"{stack}.blocks.{n - 1}.hook_resid_post")
                continue
            names.append(f"{stack}.blocks.{l}.hook_resid_pre")
            if incl_mid and l < layer:
                names += [f"{stack}.blocks.{l}.{m}" for m in mids]
            elif l == layer and (mlp_input or cross_input):
                names += [f"{stack}.blocks.{l}.{m}" for m in (mids if mlp_input else mids[:1])]
        comps = torch.stack([psl.apply(self[nm], dim=-2) for nm in names])
        if apply_ln:
            comps = self.apply_ln_to_stack(
                comps,
                layer,
                mlp_input=mlp_input,
                pos_slice=pos_slice,
                has_batch_dim=self.has_batch_dim,
                recompute_ln=layer == n,
                stack=stack,
                cross_input=cross_input,
            )
        return (comps, names) if return_labels else comps

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
        stack: Stack = "decoder",
        cross_input: bool = False,
    ) -> Any:
        """The residual stream into ``layer`` as a stack of what wrote it: the embeddings, then
        each block's ``attn`` (``cross_attn``) and ``mlp`` outputs. ``mode``: ``"all"``, ``"attn"``
        (self- and cross-attention), ``"mlp"``. Sums to the residual at that point."""
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        layer = self._layer(layer, stack)
        psl = _sl(pos_slice)
        items: list[tuple[str, torch.Tensor]] = list(self._embeds(stack)) if incl_embeds else []
        out_site = {"attn": "hook_attn_out", "cross_attn": "hook_cross_attn_out", "mlp": "hook_mlp_out"}
        for l in range(layer):
            for kind in self._kinds(stack) + ["mlp"]:
                if mode == "all" or (mode == "mlp") == (kind == "mlp"):
                    items.append((f"{stack}.blocks.{l}.{kind}", self[f"{stack}.blocks.{l}.{out_site[kind]}"]))
        if layer < self._n(stack) and mode != "mlp":
            for kind in self._partial_kinds(stack, mlp_input, cross_input):
                items.append((f"{stack}.blocks.{layer}.{kind}", self[f"{stack}.blocks.{layer}.{out_site[kind]}"]))
        if not items:
            raise ValueError("nothing to decompose: no embeddings (incl_embeds=False) and no layers before this one")
        comps = torch.stack([psl.apply(t, dim=-2) for _, t in items])
        if apply_ln:
            comps = self.apply_ln_to_stack(
                comps, layer, mlp_input=mlp_input, pos_slice=pos_slice, stack=stack, cross_input=cross_input
            )
        labels = [nm for nm, _ in items]
        return (comps, labels) if return_labels else comps

    # ---- heads -------------------------------------------------------------------------------
    def head_results(
        self,
        stack: str,
        layer: int,
        kind: str = "attn",
        pos_slice: Any = None,
    ) -> Float[torch.Tensor, "batch pos head d_model"]:
        """Every head's result of one attention, ``einsum("...hd,hdm->...hm", z, W_O)`` (what the opt-in
        ``hook_result`` holds); ``pos_slice`` selects positions of ``z`` first (an int drops the axis)."""
        name = f"{stack}.blocks.{layer}.{kind}.hook_z"
        if name not in self.cache_dict:
            raise KeyError(
                f"'{name}' is not in the cache: head results are computed from hook_z; keep it in "
                "run_with_cache's names_filter (e.g. lambda n: n.endswith('hook_z'))"
            )
        W_O = self.model.attn_weight("W_O", stack, layer, kind)
        z = _sl(pos_slice).apply(self.cache_dict[name], dim=-3)
        return torch.einsum("...hd,hdm->...hm", z.to(W_O.dtype), W_O)

    def compute_head_results(self, stack: Stack | None = None) -> None:
        """Store every head's ``hook_result`` ``[batch, pos, head, d_model]`` in the cache (memory:
        ``n_heads`` residual streams per attention). The helpers below do not need this."""
        for s in [stack] if stack else list(self.model.n_layers):
            for kind in self._kinds(s):
                for l in range(self._n(s)):
                    self.cache_dict[f"{s}.blocks.{l}.{kind}.hook_result"] = self.head_results(s, l, kind)

    def _head_stack(
        self, layer: int, stack: str, partial: list[str], pos_slice: Any, kinds: list[str] | None = None
    ) -> tuple[torch.Tensor, list[str]]:
        parts, labels = [], []
        for l in range(min(layer + (1 if partial else 0), self._n(stack))):
            for kind in self._kinds(stack) if l < layer else partial:
                if kinds is not None and kind not in kinds:
                    continue
                r = self.head_results(stack, l, kind, pos_slice)
                parts.append(r.movedim(-2, 0))
                labels += [f"{stack}.blocks.{l}.{kind}.head.{h}" for h in range(r.shape[-2])]
        if parts:
            return torch.cat(parts, 0), labels
        ref = _sl(pos_slice).apply(self._input_resid(0, stack, False, False), dim=-2)
        return ref.new_zeros(0, *ref.shape), labels

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Any = None,
        apply_ln: bool = False,
        stack: Stack = "decoder",
        kinds: list[str] | None = None,
    ) -> Any:
        """Every head's result (``z_h W_O[h]``) of the layers strictly before ``layer``,
        ``[component, batch, pos, d_model]``; per layer self-attention heads, then cross-attention
        heads. Labels like ``decoder.blocks.3.cross_attn.head.2``. ``incl_remainder`` adds the rest
        of the residual into ``layer``. ``kinds`` keeps only ``["attn"]`` or ``["cross_attn"]``."""
        layer = self._layer(layer, stack)
        comps, labels = self._head_stack(layer, stack, [], pos_slice, kinds)
        if incl_remainder:
            total = _sl(pos_slice).apply(self._input_resid(layer, stack, False, False), dim=-2)
            comps = torch.cat([comps, (total - comps.sum(0))[None]])
            labels = labels + ["remainder"]
        if apply_ln:
            comps = self.apply_ln_to_stack(comps, layer, pos_slice=pos_slice, stack=stack)
        return (comps, labels) if return_labels else comps

    def stack_activation(
        self, activation_name: str, layer: int = -1, sublayer_type: str | None = None, stack: Stack = "decoder"
    ) -> torch.Tensor:
        """``cache[activation_name, l, stack]`` for every layer before ``layer``, stacked."""
        layer = self._layer(layer, stack)
        return torch.stack([self[activation_name, l, stack] for l in range(layer)])

    # ---- neurons -----------------------------------------------------------------------------
    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Any = None,
        pos_slice: Any = None,
        project_output_onto: torch.Tensor | None = None,
        stack: Stack = "decoder",
    ) -> torch.Tensor:
        """Each neuron's write to the residual, ``post[..., n] W_out[n]`` ``[batch, pos, neuron, d_model]``
        (or projected onto ``project_output_onto`` ``[d_model]`` / ``[d_model, k]`` without
        materialising ``d_model``)."""
        acts = _sl(pos_slice).apply(self[f"{stack}.blocks.{layer}.mlp.hook_post"], dim=-2)
        W_out = self.model.mlp_weight("W_out", stack, layer)
        nsl = _neuron_slice(neuron_slice)
        acts, W_out = nsl.apply(acts, dim=-1).to(W_out.dtype), nsl.apply(W_out, dim=0)
        if project_output_onto is None:
            return acts[..., None] * W_out
        proj = W_out @ project_output_onto.to(W_out.dtype)
        return acts * proj if project_output_onto.ndim == 1 else acts[..., None] * proj

    def stack_neuron_results(
        self,
        layer: int,
        pos_slice: Any = None,
        neuron_slice: Any = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
        project_output_onto: torch.Tensor | None = None,
        mlp_input: bool = False,
        stack: Stack = "decoder",
    ) -> Any:
        """Every neuron's result of the MLPs strictly before ``layer`` ``[component, batch, pos, d_model]``,
        labels ``decoder.blocks.0.mlp.neuron.17``. Expensive for all neurons: pass
        ``project_output_onto`` (a direction) to keep one number per neuron."""
        layer = self._layer(layer, stack)
        psl = _sl(pos_slice)
        proj = project_output_onto
        p2 = None if proj is None else (proj[:, None] if proj.ndim == 1 else proj)
        nsl = _neuron_slice(neuron_slice)
        parts, labels = [], []
        for l in range(layer):
            if p2 is not None and apply_ln:
                # LN(c) . p = (c . p - mean(c) sum(p)) / s, so the neuron axis never meets d_model.
                acts = nsl.apply(psl.apply(self[f"{stack}.blocks.{l}.mlp.hook_post"], dim=-2), dim=-1)
                W_out = nsl.apply(self.model.mlp_weight("W_out", stack, l), dim=0)
                lin = W_out @ p2.to(W_out.dtype)
                if self._centres(layer, stack, mlp_input, False):
                    lin = lin - W_out.mean(-1, keepdim=True) * p2.sum(0).to(W_out.dtype)
                nr = (acts.to(lin.dtype) / self._scale(layer, stack, mlp_input, False, pos_slice))[..., None] * lin
            else:
                nr = self.get_neuron_results(l, neuron_slice, pos_slice, p2, stack)
            parts.append(nr.movedim(-2, 0))
            d_mlp = self.model.mlp_weight("W_out", stack, l).shape[0]
            labels += [f"{stack}.blocks.{l}.mlp.neuron.{i}" for i in nsl.indices(d_mlp).tolist()]
        if parts:
            comps = torch.cat(parts, 0)
        else:
            ref = psl.apply(self._input_resid(0, stack, False, False), dim=-2)
            comps = ref.new_zeros(0, *ref.shape[:-1], ref.shape[-1] if p2 is None else p2.shape[-1])
        if incl_remainder:
            total = psl.apply(self._input_resid(layer, stack, mlp_input, False), dim=-2)
            if p2 is not None:
                if apply_ln:
                    total = self.apply_ln_to_stack(total[None], layer, mlp_input, pos_slice, stack=stack)[0]
                total = total @ p2.to(total.dtype)
            comps = torch.cat([comps, (total - comps.sum(0))[None]])
            labels.append("remainder")
        if apply_ln and p2 is None:
            comps = self.apply_ln_to_stack(comps, layer, mlp_input=mlp_input, pos_slice=pos_slice, stack=stack)
        if proj is not None and proj.ndim == 1:
            comps = comps[..., 0]
        return (comps, labels) if return_labels else comps

    # ---- layer norm --------------------------------------------------------------------------
    def _norm_name(self, layer: int, stack: str, mlp_input: bool, cross_input: bool) -> str:
        if layer == self._n(stack):
            if mlp_input or cross_input:
                raise ValueError("at the final layer (the unembed) mlp_input / cross_input must be False")
            if stack == "encoder" and self.model.cfg.encoder.pool_stride:
                raise ValueError(
                    "the encoder's final norm follows Qwen2-Audio's pooling: pass layer < n_layers, "
                    "or decompose encoder.hook_pooled yourself"
                )
            return f"{stack}.ln_final"
        return f"{stack}.blocks.{layer}.{'ln2' if mlp_input else 'ln_cross' if cross_input else 'ln1'}"

    def _norm(self, layer: int, stack: str, mlp_input: bool, cross_input: bool) -> Any:
        return self.model.get_submodule(self._norm_name(layer, stack, mlp_input, cross_input))

    def _centres(self, layer: int, stack: str, mlp_input: bool, cross_input: bool) -> bool:
        return type(self._norm(layer, stack, mlp_input, cross_input)).__name__ == "LayerNorm"

    def _scale(
        self, layer: int, stack: str, mlp_input: bool, cross_input: bool, pos_slice: Any, batch_slice: Any = None
    ) -> torch.Tensor:
        """The norm's cached scale ``[batch, pos, 1]``, or the same computed by hand from the
        cached residual it normalised: ``sqrt(var(x) + eps)`` (LayerNorm), ``sqrt(mean(x^2) + eps)`` (RMSNorm)."""
        name = self._norm_name(layer, stack, mlp_input, cross_input)
        if f"{name}.hook_scale" in self.cache_dict:
            scale = self.cache_dict[f"{name}.hook_scale"]
        else:
            try:
                x = self._input_resid(layer, stack, mlp_input, cross_input).float()
            except KeyError:
                raise KeyError(
                    f"apply_ln needs '{name}.hook_scale' or the residual it normalises in the cache; "
                    f"keep one of them (names_filter)"
                ) from None
            norm = self._norm(layer, stack, mlp_input, cross_input)
            if self._centres(layer, stack, mlp_input, cross_input):
                x = x - x.mean(-1, keepdim=True)
            scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        scale = _sl(pos_slice).apply(scale, dim=-2)
        if batch_slice is not None and self.has_batch_dim:
            scale = _sl(batch_slice).apply(scale, dim=0)
        return scale

    def apply_ln_to_stack(
        self,
        residual_stack: Float[torch.Tensor, "component *batch_and_pos d_model"],
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
        stack: Stack = "decoder",
        cross_input: bool = False,
    ) -> Float[torch.Tensor, "component *batch_and_pos d_model"]:
        """Each component as the norm before ``layer``'s sublayer sees it (TL semantics):
        ``(c - mean(c)) / s`` with the cached scale ``s`` of the whole residual (no centring for
        RMSNorm; the norm's weight and bias are not applied). ``layer = n_layers`` (or -1 / None):
        the final norm. ``recompute_ln`` (final layer only) instead applies the final norm module
        to each component with its own statistics (logit lens)."""
        layer = self._layer(layer, stack)
        if has_batch_dim and batch_slice is not None:
            residual_stack = _sl(batch_slice).apply(residual_stack, dim=1)
        if recompute_ln and layer == self._n(stack):
            norm = self._norm(layer, stack, False, False)
            return torch.stack([norm(c) for c in residual_stack])
        if self._centres(layer, stack, mlp_input, cross_input):
            residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        scale = self._scale(layer, stack, mlp_input, cross_input, pos_slice, batch_slice)
        return residual_stack / scale.to(residual_stack.dtype)

    # ---- logits ------------------------------------------------------------------------------
    def logit_directions(self, tokens: Any, incorrect_tokens: Any = None) -> Float[torch.Tensor, "... d_model"]:
        """``w * W_U[:, tokens]`` (minus the same for ``incorrect_tokens``): the direction a
        normalised residual component is read along, ``w`` the final norm's weight."""
        w = self.model.decoder.ln_final.w
        d = self.model.tokens_to_residual_directions(tokens) * w
        if incorrect_tokens is not None:
            t, it = torch.as_tensor(_token(self.model, tokens)), torch.as_tensor(_token(self.model, incorrect_tokens))
            if t.shape != it.shape:
                raise ValueError(
                    f"tokens and incorrect_tokens must have the same shape, got {tuple(t.shape)} and {tuple(it.shape)}"
                )
            d = d - self.model.tokens_to_residual_directions(incorrect_tokens) * w
        return d

    def logit_attrs(
        self,
        residual_stack: Float[torch.Tensor, "component *batch_and_pos d_model"],
        tokens: Any,
        incorrect_tokens: Any = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> Float[torch.Tensor, "component *batch_and_pos"]:
        """Each component's direct contribution to the logit of ``tokens`` (or the logit difference
        to ``incorrect_tokens``): ``apply_ln_to_stack(c) . (w * W_U[:, t])``. Over a full
        decomposition these sum to the logit minus the final norm's bias term ``b . W_U[:, t]``.
        ``tokens``: an id, a string, ``[batch]`` (one per item) or ``[batch, pos]``."""
        dirs = self.logit_directions(tokens, incorrect_tokens)
        scaled = self.apply_ln_to_stack(
            residual_stack,
            -1,
            pos_slice=pos_slice,
            batch_slice=batch_slice,
            has_batch_dim=has_batch_dim,
            stack="decoder",
        )
        if (
            has_batch_dim
            and scaled.ndim == 4
            and dirs.ndim == 2
            and dirs.shape[0] == scaled.shape[1]
            and _sl(batch_slice).mode != "int"
        ):
            dirs = dirs.unsqueeze(-2)  # one token per item, broadcast over positions
        return (scaled * dirs.to(scaled.dtype)).sum(-1)

    # ---- full decomposition ------------------------------------------------------------------
    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Any = None,
        return_labels: bool = False,
        project_output_onto: torch.Tensor | None = None,
        stack: Stack = "decoder",
        cross_input: bool = False,
        split_biases: bool = False,
    ) -> Any:
        """The residual into ``layer`` as every head, every neuron (or MLP), the embeddings and
        the biases, in TransformerLens's order: heads, neurons / MLPs, embeddings, ``bias``
        (every attention's ``b_O`` and, with ``expand_neurons``, every MLP's ``b_out``; with
        ``split_biases`` one row each, labelled ``decoder.blocks.l.cross_attn.b_O`` /
        ``decoder.blocks.l.mlp.b_out``). The rows sum exactly to the residual at that point."""
        layer = self._layer(layer, stack)
        psl = _sl(pos_slice)
        partial = self._partial_kinds(stack, mlp_input, cross_input) if layer < self._n(stack) else []
        heads, labels = self._head_stack(layer, stack, partial, pos_slice)
        comps = [heads]
        if layer > 0:
            mlps, mlp_labels = (
                self.stack_neuron_results(layer, pos_slice=pos_slice, return_labels=True, stack=stack)
                if expand_neurons
                else self.decompose_resid(
                    layer, pos_slice=pos_slice, mode="mlp", incl_embeds=False, return_labels=True, stack=stack
                )
            )
            comps, labels = comps + [mlps], labels + mlp_labels
        embeds = self._embeds(stack)
        comps += [psl.apply(t, dim=-2)[None] for _, t in embeds]
        labels = labels + [name for name, _ in embeds]
        biases: list[tuple[str, torch.Tensor]] = []
        for l in range(min(layer + (1 if partial else 0), self._n(stack))):
            for kind in self._kinds(stack) if l < layer else partial:
                biases.append((f"{stack}.blocks.{l}.{kind}.b_O", self.model.attn_weight("b_O", stack, l, kind)))
            if expand_neurons and l < layer:
                biases.append((f"{stack}.blocks.{l}.mlp.b_out", self.model.mlp_weight("b_out", stack, l)))
        shape = heads.shape[1:]
        if split_biases:
            comps += [b.to(heads.dtype).expand(shape)[None] for _, b in biases]
            labels = labels + [name for name, _ in biases]
        else:
            total = sum((b for _, b in biases), heads.new_zeros(shape[-1]))
            comps.append(total.to(heads.dtype).expand(shape)[None])
            labels.append("bias")
        out = torch.cat([c.to(heads.dtype) for c in comps])
        if apply_ln:
            out = self.apply_ln_to_stack(
                out, layer, mlp_input=mlp_input, pos_slice=pos_slice, stack=stack, cross_input=cross_input
            )
        if project_output_onto is not None:
            out = out @ project_output_onto.to(out.dtype)
        return (out, labels) if return_labels else out


def _neuron_slice(s: Any) -> Slice:
    # One neuron keeps its axis (TL treats an int like [n]), so every stack has a neuron axis.
    if isinstance(s, int) or (isinstance(s, Slice) and s.mode == "int"):
        return Slice([int(s.slice) if isinstance(s, Slice) else s])
    return _sl(s)


def _token(model: Any, t: Any) -> Any:
    return model.to_single_token(t) if isinstance(t, str) else t


__all__ = ["ActivationCache"]
