"""Interventions on hooked ASR models: components, patching/ablation, sweeps, metrics, attribution."""
from hooked_asr.patching.components import Component, ComponentError, components, parse_component
from hooked_asr.patching.interventions import (
    Intervention, MissingPositionError, PositionTracker, generate_with_interventions, hook_names,
    intervention_hooks, interpolate, mean_ablate, mean_activations, patch, patched, position_kind,
    record_reference, run_with_interventions, zero_ablate,
)
from hooked_asr.patching.references import make_reference, other_utterance, rms, silence, white_noise
from hooked_asr.patching.metrics import (
    TRANSCRIPT_METRICS, Transcript, contains_word, continuation_logprob, logit_difference, normalize_text,
    transcript_changed, word_error_rate, word_restored,
)
from hooked_asr.patching.sweeps import LOGIT_METRICS, SweepItem, SweepResult, sweep
from hooked_asr.patching.attribution import attribution_patching, patching_effects
