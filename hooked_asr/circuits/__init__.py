"""Circuit analysis on encoder-decoder ASR models, written over hook names and the public model API.

    heads.py      per-head results computed on demand: result_h = z_h W_O[h]  [batch, pos, head, d_model]
                    head_results(model, cache, stack, layer, kind, pos_slice)   one attention, every head
                    head_result(model, cache, "decoder.blocks.3.cross_attn.head.2")   one head
                    head_components(model, stack, kinds, layer)   heads as sweep components
                    stack_head_results(model, cache, stack, kinds, layer) -> (stack, labels)
    (hooked_asr.ActivationCache, what run_with_cache(..., return_cache_object=True) returns, has
                    TransformerLens's accumulated_resid, decompose_resid, stack_head_results, logit_attrs,
                    get_full_resid_decomposition, ... with stack= on each; it lives with the model)
    dla.py        direct_logit_attribution(model, inputs, tokens, incorrect_tokens, positions) -> DLAResult
                    dla_transcript(model, audio, step=None)   every generation step of a transcript
                    DLAResult.heatmap(kind, step), .summary(), .save(out) (JSON, CSV, PNG per kind)
    detectors.py  detect_heads(model, items, kind) -> [layer, head] (dict per attention where several):
                    alignment, previous_token, duplicate_token/repetition, induction, padding, silence,
                    first_frame, reference; top_heads, save_head_scores, word_by_word (timed espeak speech)
    weights.py    QK / OV (TransformerLens FactoredMatrix) for any head, cross-attention too;
                    ov_through_unembed (built by the model: model.weights(stack, kind).circuit). Stacked weights live on the model:
                    model.weights("decoder", "cross_attn").W_Q  [layer, head, d_model, d_head]
    graph.py      Graph.from_model(model): senders (heads of all kinds, MLPs, embeddings), receivers
                    (<head><q|k|v>, MLP inputs, logits), edges (encoder -> decoder via cross-attention k/v)
    path_patching.py  path_patch(model, inputs, ref, senders, receivers), run_with_patched_edges
    eap.py        eap / eap_ig -> EdgeScores (ranked edges, node sums, top-k circuits, JSON); EAP-IG's completeness
                    check and steps='auto'
    circuit.py    Circuit: evaluate by real patching (faithfulness), draw (PNG), to_json; faithfulness_curve;
                    mib_scores (MIB's CPR and CMD)

Components are named in the sweep language of :mod:`hooked_asr.patching.components`
(``decoder.blocks.3.cross_attn.head.2``), so attribution tables and patching sweeps line up.
Pattern-level interventions (masking a head's attention to a window of frames) live with the
other interventions: :func:`hooked_asr.patching.mask_attention` (patching/attention_masks.py), and
``attention_site`` to patch or ablate one head's pattern.

    >>> logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens, return_cache_object=True)
    >>> heads, labels = cache.stack_head_results(return_labels=True)     # self + cross heads
    >>> dla_transcript(model, "speech.wav").heatmap("cross_attn", step=2)
"""

from hooked_asr.circuits.detectors import (
    DETECTORS,
    DetectorItem,
    detect_heads,
    save_head_scores,
    top_heads,
    word_by_word,
)
from hooked_asr.circuits.dla import DLAResult, direct_logit_attribution, dla_transcript
from hooked_asr.circuits.heads import head_components, head_result, head_results, stack_head_results, z_name
from hooked_asr.circuits.weights import OV, QK, ov_through_unembed
from hooked_asr.circuits.graph import Graph  # noqa: I001 - after heads, which it uses
from hooked_asr.circuits.path_patching import path_patch, record_graph_reference, run_with_patched_edges
from hooked_asr.circuits.eap import Completeness, CompletenessWarning, EdgeScores, eap, eap_ig
from hooked_asr.circuits.circuit import (
    MIB_FRACTIONS,
    Circuit,
    MIBScores,
    faithfulness_curve,
    mib_scores,
    plot_faithfulness,
)

__all__ = [
    "DETECTORS",
    "DLAResult",
    "DetectorItem",
    "OV",
    "QK",
    "detect_heads",
    "direct_logit_attribution",
    "dla_transcript",
    "head_components",
    "head_result",
    "head_results",
    "ov_through_unembed",
    "save_head_scores",
    "stack_head_results",
    "top_heads",
    "word_by_word",
    "z_name",
    "Circuit",
    "EdgeScores",
    "Graph",
    "eap",
    "eap_ig",
    "faithfulness_curve",
    "path_patch",
    "plot_faithfulness",
    "record_graph_reference",
    "run_with_patched_edges",
    "Completeness",
    "CompletenessWarning",
    "MIBScores",
    "MIB_FRACTIONS",
    "mib_scores",
]
