"""Circuit analysis on encoder-decoder ASR models, written over hook names and the public model API.

    heads.py     per-head results computed on demand: result_h = z_h W_O[h]  [batch, pos, head, d_model]
                   head_results(model, cache, stack, layer, kind)       one attention, every head
                   head_result(model, cache, "decoder.blocks.3.cross_attn.head.2")   one head
                   head_components(model, stack, kinds, layer)          heads as sweep components
                   stack_head_results(model, cache, stack, kinds, layer) -> (stack, labels)
    weights.py   QK / OV as TransformerLens FactoredMatrix for any head (cross-attention too),
                   ov_through_unembed; stacked weights come from the model:
                   model.weights("decoder", "cross_attn").W_Q  [layer, head, d_model, d_head]

Components are named with the sweep language of :mod:`hooked_asr.patching.components`
(``decoder.blocks.3.cross_attn.head.2``), so attribution tables and patching sweeps line up.

    >>> logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens)
    >>> heads, labels = stack_head_results(model, cache, stack="decoder")   # self + cross heads
"""

from hooked_asr.circuits.heads import head_components, head_result, head_results, stack_head_results, z_name
from hooked_asr.circuits.weights import OV, QK, ov_through_unembed

__all__ = [
    "OV", "QK", "head_components", "head_result", "head_results", "ov_through_unembed", "stack_head_results",
    "z_name",
]
