"""The component language: strings that name one hook and an optional head.

    encoder.blocks.5.attn                 -> encoder.blocks.5.hook_attn_out
    encoder.blocks.5.mlp                  -> encoder.blocks.5.hook_mlp_out
    decoder.blocks.1.cross_attn           -> decoder.blocks.1.hook_cross_attn_out
    decoder.blocks.1.cross_attn.head.3    -> decoder.blocks.1.cross_attn.hook_z, head 3
    decoder.blocks.0.attn.head.2          -> decoder.blocks.0.attn.hook_z, head 2
    encoder.hook_out                      -> itself (any hook name is a component)

A head is patched on ``hook_z`` (``[batch, pos, head, d_head]``): the head's output before
``W_O``, so patching head ``h`` changes exactly ``z_h W_O[h]`` in the block's attention output.
Every name is checked against the model with ``model.check_hook_name``, so a component
of a stack or layer the model lacks fails with the model's own explanation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hooked_asr.hooks import block_of

KINDS = ("attn", "cross_attn", "mlp")
_WHOLE_HOOK = {"attn": "hook_attn_out", "cross_attn": "hook_cross_attn_out", "mlp": "hook_mlp_out"}
_SPEC = re.compile(r"^(?P<stack>\w+)\.blocks\.(?P<layer>\d+)\.(?P<kind>attn|cross_attn|mlp)(?:\.head\.(?P<head>\d+))?$")


class ComponentError(ValueError):
    """A component string that does not name a component of the model."""


@dataclass(frozen=True)
class Component:
    """One patchable site: a hook name and, for a head, its index on the head axis of ``hook_z``.

    ``kind`` is ``attn``, ``cross_attn``, ``mlp`` or ``hook`` (a raw hook name).
    """

    name: str
    hook_name: str
    head: int | None = None
    stack: str | None = None
    layer: int | None = None
    kind: str = "hook"

    def __str__(self) -> str:
        return self.name


def _n_heads(model: Any, stack: str) -> int | None:
    cfg = getattr(getattr(model, "cfg", None), stack, None)
    return getattr(cfg, "n_heads", None)


def parse_component(model: Any, spec: "str | Component") -> Component:
    """Resolve a component string (or pass a :class:`Component` through, re-validated).

    Raises :class:`ComponentError` naming the string and what is valid.
    """
    if isinstance(spec, Component):
        # A hand-built Component (any hook, any head) is taken as it is, once its hook is checked.
        _check(model, spec.hook_name, spec.name)
        return spec
    if not isinstance(spec, str):
        raise ComponentError(f"a component is a string like 'decoder.blocks.0.cross_attn.head.3', got {spec!r}")
    m = _SPEC.match(spec)
    if m is None:
        if ".head." in spec or spec.split(".")[-1] in KINDS:
            raise ComponentError(
                f"cannot parse component {spec!r}: write '<stack>.blocks.<layer>.<attn|cross_attn|mlp>' "
                f"with an optional '.head.<h>' (attention only), e.g. 'decoder.blocks.0.cross_attn.head.3'"
            )
        # Anything else must be a hook name: the component is the whole activation.
        _check(model, spec, spec)
        stack = spec.split(".")[0]
        block = block_of(spec)
        return Component(spec, spec, None, stack, block[1] if block else None, "hook")
    stack, layer, kind = m.group("stack"), int(m.group("layer")), m.group("kind")
    head = None if m.group("head") is None else int(m.group("head"))
    if kind == "mlp" and head is not None:
        raise ComponentError(f"cannot parse component {spec!r}: an MLP has no heads; use '{stack}.blocks.{layer}.mlp'")
    if head is None:
        hook = f"{stack}.blocks.{layer}.{_WHOLE_HOOK[kind]}"
    else:
        hook = f"{stack}.blocks.{layer}.{kind}.hook_z"
    _check(model, hook, spec)
    if head is not None:
        n = _n_heads(model, stack)
        if n is not None and head >= n:
            raise ComponentError(
                f"component {spec!r}: head {head} does not exist, the {stack} has {n} heads (0-{n - 1})"
            )
    return Component(spec, hook, head, stack, layer, kind)


def _check(model: Any, hook: str, spec: str) -> None:
    try:
        model.check_hook_name(hook)
    except KeyError as e:
        msg = e.args[0] if e.args else str(e)
        raise ComponentError(f"component {spec!r} maps to hook '{hook}', which this model lacks: {msg}") from None


def components(
    model: Any,
    kinds: Iterable[str] = KINDS,
    heads: bool = True,
    stacks: Iterable[str] = ("encoder", "decoder"),
    layers: Sequence[int] | None = None,
) -> list[Component]:
    """Every component of the model of the given kinds, in layer order.

    ``heads=True`` lists attention components head by head (``...attn.head.h``);
    ``heads=False`` lists whole attention outputs. MLPs are always whole. Kinds a stack
    lacks (the encoder has no ``cross_attn``; Qwen2-Audio's decoder neither) are skipped.
    ``layers`` restricts to those layer indices (in every stack).
    """
    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ComponentError(f"unknown component kind(s) {bad}; kinds are {list(KINDS)}")
    out: list[Component] = []
    for stack in stacks:
        n_layers = model.n_layers.get(stack)
        if n_layers is None:
            raise ComponentError(f"unknown stack {stack!r}; this model has {sorted(model.n_layers)}")
        for layer in range(n_layers):
            if layers is not None and layer not in layers:
                continue
            for kind in kinds:
                whole = f"{stack}.blocks.{layer}.{_WHOLE_HOOK[kind]}"
                if whole not in model.hook_dict:
                    continue
                if kind != "mlp" and heads:
                    n = _n_heads(model, stack) or 0
                    out += [parse_component(model, f"{stack}.blocks.{layer}.{kind}.head.{h}") for h in range(n)]
                else:
                    out.append(parse_component(model, f"{stack}.blocks.{layer}.{kind}"))
    return out


__all__ = ["Component", "ComponentError", "KINDS", "components", "parse_component"]
