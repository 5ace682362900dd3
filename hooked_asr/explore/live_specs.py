"""The live explorer's intervention lists: what the page may send, checked field by field and
normalised (:meth:`hooked_asr.explore.live.LiveSession.validate`; the forms are in :mod:`.live`'s docstring).
Anything else (unknown keys, methods or hooks, ranges outside the clip) is refused with a message that names it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hooked_asr.explore.live_audio import LiveError

PATCH_METHODS = ("zero", "mean", "noise", "other", "mask")
METHODS = PATCH_METHODS + ("steer", "probe")
SPEC_KEYS = {"component", "method", "alpha", "from", "to", "tokens", "feature", "mode", "value"}
STEER_MODES = ("add", "scale", "clamp")
MAX_INTERVENTIONS = 64
MAX_STEER = 1e4


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _time_range(i: int, s: Mapping[str, Any], duration: float, norm: dict[str, Any]) -> None:
    """``from``/``to`` (seconds) into ``norm``, checked."""
    a, b = s.get("from", 0.0), s.get("to", duration)
    if not (_number(a) and _number(b) and 0 <= a < b):
        raise LiveError(f"intervention {i}: need 0 <= from < to (seconds), got from={a!r} to={b!r}")
    norm["from"], norm["to"] = float(a), float(b)


def _value(i: int, value: Any) -> float:
    if not (_number(value) and abs(value) <= MAX_STEER):
        raise LiveError(f"intervention {i}: value must be a finite number with |value| <= {MAX_STEER:g}, got {value!r}")
    return float(value)


def validate(session: Any, specs: Any) -> list[dict[str, Any]]:
    """The intervention list of ``session`` (a ``LiveSession``), checked and normalised; raises :class:`LiveError`."""
    if not isinstance(specs, list) or len(specs) > MAX_INTERVENTIONS:
        raise LiveError(
            f"interventions must be a list of at most {MAX_INTERVENTIONS} objects, got {type(specs).__name__}"
        )
    out = []
    for i, s in enumerate(specs):
        if not isinstance(s, Mapping):
            raise LiveError(
                f"intervention {i} must be an object like {{'component': ..., 'method': 'zero'}}, got {s!r}"
            )
        extra = set(s) - SPEC_KEYS
        if extra:
            raise LiveError(f"intervention {i}: unknown keys {sorted(extra)}; allowed: {sorted(SPEC_KEYS)}")
        method = s.get("method")
        if method == "steer":
            out.append(_steer(session, i, s))
        elif method == "probe":
            out.append(_probe(session, i, s))
        else:
            out.append(_patch(session, i, s))
    ranges = {(s.get("from"), s.get("to")) for s in out if s["method"] == "steer"}
    if len(ranges) > 1:
        raise LiveError(
            f"every 'steer' of a list shares one time range (one SAE splice), got {sorted(ranges, key=str)}"
        )
    return out


def _patch(session: Any, i: int, s: Mapping[str, Any]) -> dict[str, Any]:
    from hooked_asr.patching import parse_component
    from hooked_asr.patching.interventions import position_kind

    comp_s, method = s.get("component"), s.get("method")
    if set(s) & {"feature", "mode", "value"}:
        raise LiveError(f"intervention {i}: 'feature'/'mode'/'value' belong to methods 'steer' and 'probe'")
    if not isinstance(comp_s, str) or not 0 < len(comp_s) <= 200:
        raise LiveError(f"intervention {i}: component must be a string like 'decoder.blocks.0.cross_attn.head.3'")
    if method not in PATCH_METHODS:
        raise LiveError(f"intervention {i}: method {method!r} is not one of {list(session.methods())}")
    if method == "other" and session.other is None:
        raise LiveError(
            f"intervention {i}: method 'other' patches from a second clip: give one first (Python: "
            "session.set_other(audio); the page: 'upload as the other clip')"
        )
    try:
        comp = parse_component(session.model, comp_s)
    except Exception as e:
        raise LiveError(f"intervention {i}: {e}") from None
    alpha = s.get("alpha", 1.0)
    if not (_number(alpha) and 0 <= alpha <= 10):
        raise LiveError(f"intervention {i}: alpha must be a number in [0, 10], got {alpha!r}")
    norm: dict[str, Any] = {"component": comp.name, "method": method}
    if alpha != 1.0:
        norm["alpha"] = float(alpha)
    if method == "mask":
        if comp.kind not in ("attn", "cross_attn"):
            raise LiveError(f"intervention {i}: 'mask' needs an attention (head), got {comp.name!r}")
        unit = "token" if comp.stack == "decoder" and comp.kind == "attn" else "frame"
        if "alpha" in norm:
            raise LiveError(f"intervention {i}: a mask has no alpha")
    else:
        if comp.hook_name.endswith(("hook_mel", "hook_conv1", "hook_conv2")):
            raise LiveError(f"intervention {i}: {comp.hook_name} has no position axis to intervene on")
        unit = position_kind(comp.hook_name)
    has_time, has_tokens = "from" in s or "to" in s, "tokens" in s
    if unit == "frame" and has_tokens or unit == "token" and has_time:
        want = "'from'/'to' (seconds)" if unit == "frame" else "'tokens': [a, b] (transcript tokens)"
        raise LiveError(f"intervention {i}: {comp.name} is indexed by {unit}s: give {want}")
    if has_time:
        _time_range(i, s, session.duration, norm)
    if has_tokens:
        tk = s["tokens"]
        if not (
            isinstance(tk, list)
            and len(tk) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in tk)
            and 0 <= tk[0] < tk[1]
        ):
            raise LiveError(f"intervention {i}: tokens must be [a, b] with 0 <= a < b, got {tk!r}")
        if method == "other" and tk[1] > len(session.steps):
            raise LiveError(
                f"intervention {i}: tokens {tk} reach past the other clip's reference run, which reads the clean "
                f"transcript's {len(session.steps)} tokens (end of text included): give b <= {len(session.steps)}"
            )
        norm["tokens"] = [int(tk[0]), int(tk[1])]
    if method == "mask" and not (has_time or has_tokens):
        raise LiveError(f"intervention {i}: a mask needs the range it hides: 'from'/'to' seconds or 'tokens'")
    return norm


def _steer(session: Any, i: int, s: Mapping[str, Any]) -> dict[str, Any]:
    sae = session.sae
    if sae is None:
        raise LiveError(f"intervention {i}: 'steer' needs an SAE: start the session with sae= (CLI: --sae PATH)")
    hook = sae.cfg.hook_name
    if s.get("component", hook) != hook:
        raise LiveError(
            f"intervention {i}: the SAE reads {hook!r}; a steer's component is that hook, got {s.get('component')!r}"
        )
    if set(s) & {"alpha", "tokens"}:
        raise LiveError(
            f"intervention {i}: a steer takes feature, mode, value and from/to, not {sorted(set(s) & {'alpha', 'tokens'})}"
        )
    f, mode = s.get("feature"), s.get("mode", "add")
    if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < int(sae.d_sae):
        raise LiveError(f"intervention {i}: feature must be an integer in 0..{int(sae.d_sae) - 1}, got {f!r}")
    if mode not in STEER_MODES:
        raise LiveError(f"intervention {i}: mode {mode!r} is not one of {list(STEER_MODES)}")
    norm: dict[str, Any] = {
        "component": hook,
        "method": "steer",
        "feature": int(f),
        "mode": mode,
        "value": _value(i, s.get("value", 0.0)),
    }
    if "from" in s or "to" in s:
        _time_range(i, s, session.duration, norm)
    return norm


def _probe(session: Any, i: int, s: Mapping[str, Any]) -> dict[str, Any]:
    if session.probe is None:
        raise LiveError(
            f"intervention {i}: 'probe' steers along a probe's direction: start the session with "
            "probe=<LinearProbe or its path> and probe_hook=<the hook it was trained on> (CLI: --probe PATH --probe-hook HOOK)"
        )
    hook = session.probe_hook
    if s.get("component", hook) != hook:
        raise LiveError(
            f"intervention {i}: the probe reads {hook!r}; a probe steer's component is that hook, got {s.get('component')!r}"
        )
    bad = set(s) & {"alpha", "tokens", "feature", "mode"}
    if bad:
        raise LiveError(f"intervention {i}: a probe steer takes value (the coefficient) and from/to, not {sorted(bad)}")
    norm: dict[str, Any] = {"component": hook, "method": "probe", "value": _value(i, s.get("value", 0.0))}
    if "from" in s or "to" in s:
        if not hook.startswith("encoder."):
            raise LiveError(
                f"intervention {i}: {hook} is a decoder site: a probe steer there applies at every token (no from/to)"
            )
        _time_range(i, s, session.duration, norm)
    return norm


__all__ = ["MAX_INTERVENTIONS", "METHODS", "PATCH_METHODS", "SPEC_KEYS", "STEER_MODES", "validate"]
