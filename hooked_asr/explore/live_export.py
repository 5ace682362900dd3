"""The live explorer's export: an intervention list as the Python that reproduces the page's numbers
with the public API (:meth:`hooked_asr.explore.live.LiveSession.to_python`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NOISE_SEED = 0  # the white-noise reference's seed, in the page and in the exported code alike


def session_code(session: Any, norm: Sequence[Mapping[str, Any]]) -> str:
    """The code for a validated intervention list ``norm`` of ``session`` (a ``LiveSession``)."""
    lang = f", language={session.clean_language!r}" if session.clean_language else ""
    lines = [
        f"# hooked_asr live explorer: {len(norm)} intervention(s) on {session.name!r} "
        f"({session.start:.2f}-{session.start + session.duration:.2f} s), {session.model_name}",
        "import torch",
        "",
        "import hooked_asr",
        "from hooked_asr.audio import load_audio",
        "from hooked_asr.patching import (interpolate, mean_ablate, mean_activations, patched, record_reference,",
        "                                 run_with_interventions, zero_ablate)",
        "from hooked_asr.patching.attention_masks import frames_between, mask_attention",
        "from hooked_asr.datasets.nonspeech import white_noise_like",
        "from hooked_asr.patching.references import other_utterance, reference_cache",
        "",
        "torch.set_grad_enabled(False)",
        f"model = hooked_asr.load_model({session.model_name!r})",
        f"audio = load_audio({str(session.audio_path)!r})  # the window the page showed (float WAV: exact samples)",
        f"clean = model.transcribe(audio, word_timestamps=True{lang})",
        "steps = list(clean.tokens) + [model.cfg.eos_token_id]  # the transcript, then end of text",
        f"tf = model.teacher_forced_inputs(audio, continuation=steps{lang})",
    ]
    from hooked_asr.patching import parse_component

    hooks = {
        m: list(
            dict.fromkeys(parse_component(session.model, s["component"]).hook_name for s in norm if s["method"] == m)
        )
        for m in ("mean", "noise", "other")
    }
    if hooks["mean"]:
        lines.append(
            f"means = mean_activations(model, [tf.kwargs], {hooks['mean']!r})  # over every position of the clip"
        )
    if hooks["other"]:
        lines += [
            f"other = load_audio({str(session.other_path)!r})  # the other clip ({session.other_name!r})",
            "# cut or zero-padded to this clip's length (encoder frames line up), run with the clean prompt and tokens",
            f"other_ref = reference_cache(model, tf.kwargs, other_utterance(audio, other), {hooks['other']!r})",
        ]
    if hooks["noise"]:
        lines += [
            f"noise = white_noise_like(audio, seed={NOISE_SEED})  # at the clip's RMS",
            f"noise_ref = record_reference(model, model.teacher_forced_inputs(noise, continuation=steps, "
            f"allow_silence=True{lang}).kwargs, {hooks['noise']!r})",
        ]
    steers = [s for s in norm if s["method"] == "steer"]
    probes = [s for s in norm if s["method"] == "probe"]
    n_ctx = int(session.model.cfg.encoder.n_ctx)
    steering = []  # context managers, in the session's order: SAE steering, probe steering

    def mask(name: str, s: Mapping[str, Any]) -> str:
        if "from" not in s:
            return "None"
        lines.extend(
            [
                f"{name} = torch.zeros({n_ctx}, dtype=torch.bool)  # the encoder frames it applies to",
                f"{name}[list(frames_between({s['from']!r}, {s['to']!r}))] = True",
            ]
        )
        return name

    if steers:
        lines += [
            "from hooked_asr.sae.model import load_sae",
            "from hooked_asr.sae.steering import FeatureIntervention, steer",
            f"sae = load_sae({session._sae_folder()!r})",
            "edits = ["
            + ", ".join(f"FeatureIntervention({s['feature']}, {s['mode']!r}, {s['value']!r})" for s in steers)
            + "]",
        ]
        steering.append(f"steer(model, sae, edits, frame_mask={mask('frame_mask', steers[0])})")
    if probes:
        lines += [
            "from hooked_asr.probing.probe import LinearProbe",
            "from hooked_asr.sae.steering import steer_direction",
            f"probe = LinearProbe.load({session._probe_file()!r})",
        ]
        for i, s in enumerate(probes):
            m = mask(f"probe_mask_{i}", s)
            steering.append(
                f"steer_direction(model, {session.probe_hook!r}, probe.direction, {s['value']!r}, frame_mask={m})"
            )
    p = "tf.prompt_len"
    lines.append("interventions = [")
    for s in norm:
        if s["method"] in ("steer", "probe"):
            continue
        if "from" in s:
            where = f"frames_between({s['from']!r}, {s['to']!r})"
        elif "tokens" in s:
            where = f"range({p} + {s['tokens'][0]}, {p} + {s['tokens'][1]})"
        else:
            where = None
        pos = f", positions={where}" if where else ""
        alpha = s.get("alpha", 1.0)
        c = repr(s["component"])
        if s["method"] == "zero":
            lines.append(f"    zero_ablate({c}{', alpha=' + repr(alpha) if alpha != 1.0 else ''}{pos}),")
        elif s["method"] == "mean":
            lines.append(f"    mean_ablate({c}, means{', alpha=' + repr(alpha) if alpha != 1.0 else ''}{pos}),")
        elif s["method"] == "noise":
            lines.append(f"    interpolate({c}, noise_ref, {alpha!r}{pos}, missing='keep'),")
        elif s["method"] == "other":
            missing = "error" if where else "keep"
            lines.append(f"    interpolate({c}, other_ref, {alpha!r}{pos}, missing={missing!r}),")
        else:
            lines.append(f"    mask_attention({c}, {where}),")
    lines.append("]")
    if steering:
        lines += [
            "import contextlib",
            "",
            "with contextlib.ExitStack() as steering:  # SAE edits keep the SAE's error term",
            *[f"    steering.enter_context({c})" for c in steering],
            "    logits = run_with_interventions(model, interventions, **tf.kwargs)",
            "    with patched(model, interventions):",
            f"        out = model.transcribe(audio{lang})",
        ]
    else:
        lines += [
            "logits = run_with_interventions(model, interventions, **tf.kwargs)",
            "with patched(model, interventions):",
            f"    out = model.transcribe(audio{lang})",
        ]
    lines += [
        f"logprobs = torch.log_softmax(logits[0, {p} - 1 : -1].float(), -1).gather(-1, tf.tokens[0, {p}:, None])[:, 0]",
        "print('clean:  ', clean.text)",
        "print('patched:', out.text)",
        "print('sum log p of the clean transcript:', float(logprobs.sum()))",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["NOISE_SEED", "session_code"]
