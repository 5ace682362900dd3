"""Hook points and hook names.

Every intermediate activation of every model lives behind a named :class:`HookPoint`.
Names follow TransformerLens inside a block and carry a stack prefix
(``encoder.blocks.3.attn.hook_z``, ``decoder.blocks.0.cross_attn.hook_pattern``); see
docs/architecture.md for the contract. This module is the one place that knows how names are built
and how a wrong name is explained to the user.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

import torch
from transformer_lens.hook_points import HookPoint as _TLHookPoint

Stack = Literal["encoder", "decoder"]

# Short names accepted by act_name and where they live inside a block (or a stack).
_BLOCK_SITES = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_mid_cross": "hook_resid_mid_cross",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "cross_attn_out": "hook_cross_attn_out",
    "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "z": "attn.hook_z",
    "rot_q": "attn.hook_rot_q",
    "rot_k": "attn.hook_rot_k",
    "attn_scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern",
    "result": "attn.hook_result",
    "cross_q": "cross_attn.hook_q",
    "cross_k": "cross_attn.hook_k",
    "cross_v": "cross_attn.hook_v",
    "cross_z": "cross_attn.hook_z",
    "cross_attn_scores": "cross_attn.hook_attn_scores",
    "cross_pattern": "cross_attn.hook_pattern",
    "cross_result": "cross_attn.hook_result",
    "pre": "mlp.hook_pre",
    "pre_linear": "mlp.hook_pre_linear",
    "post": "mlp.hook_post",
}
_STACK_SITES = {
    "mel": "hook_mel",
    "conv1": "hook_conv1",
    "conv2": "hook_conv2",
    "pos_embed": "hook_pos_embed",
    "embed": "hook_embed",
    "pooled": "hook_pooled",
    "out": "hook_out",
    "logits": "hook_logits",
}


class HookShapeError(RuntimeError):
    """A hook function returned a tensor whose shape differs from the activation's."""


class HookDtypeError(TypeError):
    """A hook function returned a tensor of another dtype or device than the activation's."""


class HookPoint(_TLHookPoint):
    """TransformerLens's HookPoint, with three additions.

    * :meth:`is_live` says whether any hook would see this point; components use it (and
      only it) to choose a fused path that skips the point.
    * With no hook attached it returns its input without going through ``nn.Module``'s
      call machinery, so an unhooked model pays almost nothing for its hook points.
    * A hook that returns a tensor of another shape raises :class:`HookShapeError`
      naming the hook and both shapes, instead of corrupting the rest of the forward; one
      of another dtype or device raises :class:`HookDtypeError` (outside autocast).
    * ``copy_input=True`` marks a hook point whose input is not the forward's own (a view
      of a parameter, or the caller's tensor): hooks then get a copy, so an in-place edit
      changes this pass only, never ``W_pos`` or the caller's ``input_features``.
    """

    def __init__(self, copy_input: bool = False):
        super().__init__()
        self.copy_input = copy_input

    def is_live(self) -> bool:
        """Whether a forward, forward-pre, backward or backward-pre hook is attached.

        A fast path may skip this point only when it is not live: a skipped point never
        fires its backward hooks either, and the gradient they should see is silently lost.
        """
        return bool(self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.is_live():
            return x
        if self.copy_input:
            x = x.clone()  # an expanded view clones to a dense tensor, one row per batch item
        out = super().__call__(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise HookShapeError(
                f"a hook on '{self.name}' returned {got}, but the activation has shape "
                f"{tuple(x.shape)}: a hook must return None or a tensor of the same shape"
            )
        if out.device != x.device or (out.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type)):
            raise HookDtypeError(
                f"a hook on '{self.name}' returned a {out.dtype} tensor on {out.device}, but the activation is "
                f"{x.dtype} on {x.device}: return the same dtype and device (e.g. result.to(x.dtype))"
            )
        return out


def act_name(site: str, layer: int | None = None, stack: Stack = "decoder") -> str:
    """Full hook name from a short site name.

    >>> act_name("resid_post", 3, "encoder")
    'encoder.blocks.3.hook_resid_post'
    >>> act_name("cross_pattern", 0)
    'decoder.blocks.0.cross_attn.hook_pattern'
    >>> act_name("out", stack="encoder")
    'encoder.hook_out'
    """
    if stack not in ("encoder", "decoder"):
        raise ValueError(f"stack must be 'encoder' or 'decoder', got {stack!r}")
    if site in _STACK_SITES and layer is None:
        return f"{stack}.{_STACK_SITES[site]}"
    if site in _BLOCK_SITES:
        if layer is None:
            raise ValueError(f"site {site!r} lives in a block: pass a layer index")
        return f"{stack}.blocks.{layer}.{_BLOCK_SITES[site]}"
    if site.startswith("ln") and layer is not None:
        return f"{stack}.blocks.{layer}.{site}"
    raise ValueError(f"unknown site {site!r}; block sites: {sorted(_BLOCK_SITES)}; stack sites: {sorted(_STACK_SITES)}")


_BLOCK_NAME = re.compile(r"^(\w+)\.blocks\.(\d+)\.(.+)$")


def block_of(name: str) -> tuple[str, int] | None:
    """``(stack, layer)`` of a hook inside a block (``"decoder.blocks.2.cross_attn.hook_z"`` ->
    ``("decoder", 2)``), or None for a hook outside the blocks."""
    m = _BLOCK_NAME.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def unknown_hook_message(name: str, valid_names: Iterable[str], n_layers: dict[str, int]) -> str:
    """Explain why ``name`` is not a hook of the model: a layer out of range, or a typo."""
    block = block_of(name)
    if block:
        stack, layer = block
        if stack in n_layers and layer >= n_layers[stack]:
            n = n_layers[stack]
            return f"unknown hook '{name}': the {stack} has {n} blocks (0-{n - 1})"
    valid = list(valid_names)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    stacks = ", ".join(f"{s}: {n} blocks" for s, n in n_layers.items())
    return f"unknown hook '{name}' ({stacks}){hint} `model.hook_dict` lists every hook name"


__all__ = ["HookDtypeError", "HookPoint", "HookShapeError", "act_name", "block_of", "unknown_hook_message", "Stack"]
