"""Lenses: what each layer of a speech recognizer already "says".

One idea per module:

- :mod:`~hooked_asr.lens.logit`: the logit lens on the decoder (teacher-forced or during
  generation), saturation layers, future-token ranks, dataset-level curves;
- :mod:`~hooked_asr.lens.encoder`: the encoder lens (the unchanged decoder reading encoder layer l);
- :mod:`~hooked_asr.lens.similarity`: meaning and sound of the top-k candidates;
- :mod:`~hooked_asr.lens.tuned`: the tuned lens (learned affine translators per layer).

Everything goes through hook names and the public model API (``models/base.py``), so the same
code runs on Whisper and Qwen2-Audio. The statistics (``mean_ci``) and text metrics
(``edit_distance``, ``phoneme_error_rate``) are imported from :mod:`hooked_asr.text`, the loop
detector from :mod:`hooked_asr.repetition`.
"""

from hooked_asr.lens.encoder import EncoderLensLayer, EncoderLensResult, encoder_lens, encoder_lens_states
from hooked_asr.lens.logit import (
    LensCurves,
    LogitLensResult,
    apply_logit_lens,
    decoder_lens_names,
    lens_curves,
    logit_lens,
    logit_lens_generate,
    logit_lens_of_cache,
    saturation_layer,
    summarize_lens,
    token_ranks,
    token_string,
)
from hooked_asr.lens.similarity import TokenSimilarity, token_similarity
from hooked_asr.lens.tuned import (
    TunedLens,
    TuneHistory,
    collect_decoder_residuals,
    compare_lenses,
    evaluate_kl,
    train_tuned_lens,
)

__all__ = [
    "EncoderLensLayer",
    "EncoderLensResult",
    "LensCurves",
    "LogitLensResult",
    "TokenSimilarity",
    "TuneHistory",
    "TunedLens",
    "apply_logit_lens",
    "collect_decoder_residuals",
    "compare_lenses",
    "decoder_lens_names",
    "encoder_lens",
    "encoder_lens_states",
    "evaluate_kl",
    "lens_curves",
    "logit_lens",
    "logit_lens_generate",
    "logit_lens_of_cache",
    "saturation_layer",
    "summarize_lens",
    "token_ranks",
    "token_similarity",
    "token_string",
    "train_tuned_lens",
]
