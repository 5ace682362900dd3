"""A model loaded in bfloat16 or float16 takes audio like one in float32 (issue 28, item 6): the
log-mel features (always computed in float32) are cast at the model's edge. On real tiny.en and
real speech (espeak), the half-precision models give float32's greedy tokens, and beam search,
run_with_cache, the logit and encoder lenses run (measured when written: 5/5 clips equal in both; the
test reads 5 in bfloat16 and 1 in float16)."""

from __future__ import annotations

import pytest
import torch

SENTENCES = [
    "The cat sat on the mat.",
    "Please call Stella and ask her to bring these things.",
    "It is raining in the north of the country today.",
    "Seven green apples fell from the tree.",
    "We will meet again next Monday morning.",
]


@pytest.fixture(scope="module")
def clips():
    from hooked_asr.datasets.espeak import synthesize

    return [synthesize(s, voice="en-us") for s in SENTENCES]


# float16 matrix products are slow on CPU (about 30 s for one tiny.en encoder pass): slow-marked there.
@pytest.fixture(
    scope="module", params=[torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)], ids=["bf16", "fp16"]
)
def half(request):
    import hooked_asr

    return hooked_asr.load_model("whisper-tiny.en", dtype=request.param)


def _some(half, clips):
    # float16 products have no fast CPU kernel (~30 s a tiny.en encoder pass): one clip there.
    return clips if next(half.parameters()).dtype == torch.bfloat16 else clips[:1]


def test_half_precision_greedy_tokens_equal_float32(half, whisper_tiny_en, clips):
    clips = _some(half, clips)
    want = [r.tokens for r in whisper_tiny_en.transcribe(clips)]
    got = [r.tokens for r in half.transcribe(clips)]
    assert got == want


def test_half_precision_runs_beams_cache_and_lenses(half, whisper_tiny_en, clips):
    from hooked_asr.lens import encoder_lens
    from hooked_asr.lens.logit import decoder_lens_names, logit_lens_of_cache

    bf16 = next(half.parameters()).dtype == torch.bfloat16
    if bf16:  # the search and the encoder lens are dtype-blind past the edge cast: float16 runs the rest
        assert half.transcribe(clips[0], beam_size=2).tokens == whisper_tiny_en.transcribe(clips[0], beam_size=2).tokens
    assert half.prepare_features(clips[0])["input_features"].dtype == torch.float32  # the model casts them
    # one teacher-forced run (a float16 encoder pass takes ~30 s on CPU) feeds the cache and the logit lens
    tokens = list(whisper_tiny_en.transcribe(clips[0]).tokens)  # = the half model's (the test above)
    inputs = half.teacher_forced_inputs(clips[0], tokens)
    logits, cache = half.run_with_cache(
        **inputs.kwargs, names_filter=["encoder.blocks.0.hook_resid_post", *decoder_lens_names(half)]
    )
    assert logits.dtype == cache["encoder.blocks.0.hook_resid_post"].dtype == next(half.parameters()).dtype
    assert torch.isfinite(logits.float()).all()
    lens = logit_lens_of_cache(half, cache, inputs)
    assert lens.top1[-1].tolist() == lens.final.tolist()  # the last layer's lens is the model's own choice
    if bf16:
        encoder_lens(half, clips[0], layers=[2], max_new_tokens=4)
