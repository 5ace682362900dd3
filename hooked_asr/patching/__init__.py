"""Interventions on hooked ASR models, written over hook names and the model-agnostic API.

components.py     the component language ('decoder.blocks.1.cross_attn.head.3' -> hook + head)
interventions.py  interpolate / patch / zero / mean ablation as composable hook factories (also on
                  attention patterns / scores),
attention_masks.py  mask a head's attention to a window of frames or tokens (scores or pattern),
                  absolute-position tracking during cached generation, reference recording
references.py     white_noise_like (seeded, RMS-matched), silence_like, another utterance; the one place a
                  reference run gets its inputs (the clean prompt and tokens) and is checked against the clean run
metrics.py        transcript changed, WER, word restored, loops, logit difference, log-prob
sweeps.py         components x dataset -> tidy table; batched rows, shared encoder, resume
attribution.py    attribution patching (one backward) and real patching effects
plotting.py       layer x head heatmaps

>>> ref = record_reference(model, reference_inputs(model, tf.kwargs, noise), comps)   # the clean prompt
>>> with patched(model, [interpolate("decoder.blocks.1.cross_attn.head.3", ref, alpha=0.5, missing="keep")]):
...     model.transcribe(audio)
"""

from hooked_asr.patching.attribution import attribution_patching, patching_effects
from hooked_asr.patching.components import Component, ComponentError, components, parse_component
from hooked_asr.patching.attention_masks import AttentionMask, frames_between, mask_attention
from hooked_asr.patching.interventions import (
    Intervention,
    MissingPositionError,
    attention_site,
    generate_with_interventions,
    interpolate,
    mean_ablate,
    mean_activations,
    patch,
    patched,
    record_reference,
    run_with_interventions,
    zero_ablate,
)
from hooked_asr.patching.metrics import (
    contains_word,
    continuation_logprob,
    logit_difference,
    transcript_changed,
    word_restored,
)
from hooked_asr.patching.references import (
    ReferenceCache,
    ReferenceInputs,
    check_reference_prompt,
    other_utterance,
    reference_cache,
    reference_inputs,
    silence_like,
    white_noise_like,
)
from hooked_asr.patching.sweeps import SweepItem, SweepResult, patched_values, sweep

# What a user patches with. The plumbing (hook_names, intervention_hooks, PositionTracker, the
# metric tables, generation_settings, ...) is imported from its module; text metrics
# (word_error_rate, normalize_text) from hooked_asr.text.
__all__ = [
    "AttentionMask",
    "ReferenceCache",
    "ReferenceInputs",
    "check_reference_prompt",
    "Component",
    "ComponentError",
    "Intervention",
    "MissingPositionError",
    "SweepItem",
    "SweepResult",
    "attention_site",
    "attribution_patching",
    "components",
    "contains_word",
    "continuation_logprob",
    "frames_between",
    "generate_with_interventions",
    "interpolate",
    "logit_difference",
    "mask_attention",
    "mean_ablate",
    "mean_activations",
    "other_utterance",
    "parse_component",
    "patch",
    "patched",
    "patched_values",
    "patching_effects",
    "record_reference",
    "reference_cache",
    "reference_inputs",
    "run_with_interventions",
    "silence_like",
    "sweep",
    "transcript_changed",
    "white_noise_like",
    "word_restored",
    "zero_ablate",
]
