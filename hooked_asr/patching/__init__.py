"""Interventions on hooked ASR models, written over hook names and the model-agnostic API.

    components.py     the component language ('decoder.blocks.1.cross_attn.head.3' -> hook + head)
    interventions.py  interpolate / patch / zero / mean ablation as composable hook factories (also on
                      attention patterns / scores),
    attention_masks.py  mask a head's attention to a window of frames or tokens (scores or pattern),
                      absolute-position tracking during cached generation, reference recording
    references.py     white noise (seeded, RMS-matched), silence, another utterance; the one place a reference
                      run gets its inputs (the clean prompt and tokens) and is checked against the clean run
    metrics.py        transcript changed, WER, word restored, loops, logit difference, log-prob
    sweeps.py         components x dataset -> tidy table; batched rows, shared encoder, resume
    attribution.py    attribution patching (one backward) and real patching effects
    plotting.py       layer x head heatmaps

    >>> ref = record_reference(model, reference_inputs(model, tf.kwargs, noise), comps)   # the clean prompt
    >>> with patched(model, [interpolate("decoder.blocks.1.cross_attn.head.3", ref, alpha=0.5, missing="keep")]):
    ...     model.transcribe(audio)
"""

from hooked_asr.patching.attribution import attribution_patching, patching_effects
from hooked_asr.patching.components import KINDS, Component, ComponentError, components, parse_component
from hooked_asr.patching.attention_masks import AttentionMask, frames_between, mask_attention
from hooked_asr.patching.interventions import (
    Intervention,
    MissingPositionError,
    PositionTracker,
    attention_site,
    generate_with_interventions,
    hook_names,
    interpolate,
    intervention_hooks,
    mean_ablate,
    mean_activations,
    patch,
    patched,
    position_kind,
    record_reference,
    run_with_interventions,
    zero_ablate,
)
from hooked_asr.patching.metrics import (
    TRANSCRIPT_METRICS,
    MetricContext,
    Transcript,
    contains_word,
    continuation_logprob,
    logit_difference,
    normalize_text,
    transcript_changed,
    word_error_rate,
    word_restored,
)
from hooked_asr.patching.references import (
    ReferenceCache,
    ReferenceInputs,
    check_reference_prompt,
    make_reference,
    other_utterance,
    reference_cache,
    reference_inputs,
    rms,
    silence,
    white_noise,
)
from hooked_asr.patching.sweeps import LOGIT_METRICS, SweepItem, SweepResult, generation_settings, patched_values, sweep

__all__ = [
    "ReferenceCache", "ReferenceInputs", "check_reference_prompt", "reference_cache", "reference_inputs",
    "AttentionMask", "attention_site", "frames_between", "mask_attention",
    "KINDS", "LOGIT_METRICS", "TRANSCRIPT_METRICS", "Component", "ComponentError", "Intervention", "MetricContext",
    "MissingPositionError", "PositionTracker", "SweepItem", "SweepResult", "Transcript", "attribution_patching",
    "components", "contains_word", "continuation_logprob", "generate_with_interventions", "generation_settings",
    "hook_names", "interpolate", "intervention_hooks", "logit_difference", "make_reference", "mean_ablate",
    "mean_activations", "normalize_text", "other_utterance", "parse_component", "patch", "patched",
    "patched_values", "patching_effects", "position_kind", "record_reference", "rms", "run_with_interventions", "silence", "sweep",
    "transcript_changed", "white_noise", "word_error_rate", "word_restored", "zero_ablate",
]
