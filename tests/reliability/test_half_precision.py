"""A model loaded in bfloat16 or float16 takes audio like one in float32 (issue 28, item 6): the
log-mel features (always computed in float32) are cast at the model's edge. On real tiny.en and
real speech (espeak), the half-precision models give float32's greedy tokens, and beam search,
run_with_cache, the logit and encoder lenses run (measured when written: 5/5 clips equal in both; the
test reads 5 in bfloat16 and 2 in float16)."""

from __future__ import annotations

import numpy as np
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
    # float16 products have no fast CPU kernel (~30 s a tiny.en encoder pass): two clips there.
    return clips if next(half.parameters()).dtype == torch.bfloat16 else clips[:2]


def test_half_precision_greedy_tokens_equal_float32(half, whisper_tiny_en, clips):
    clips = _some(half, clips)
    want = [r.tokens for r in whisper_tiny_en.transcribe(clips)]
    got = [r.tokens for r in half.transcribe(clips)]
    assert got == want


def test_half_precision_runs_beams_cache_and_lenses(half, whisper_tiny_en, clips):
    from hooked_asr.lens import encoder_lens, logit_lens

    bf16 = next(half.parameters()).dtype == torch.bfloat16
    if bf16:  # the search and the encoder lens are dtype-blind past the edge cast: float16 runs the rest
        assert half.transcribe(clips[0], beam_size=2).tokens == whisper_tiny_en.transcribe(clips[0], beam_size=2).tokens
    feats = half.prepare_features(clips[0])["input_features"]
    assert feats.dtype == torch.float32  # features stay float32; the model casts them
    tokens = torch.tensor([half.sot_sequence()])
    logits, cache = half.run_with_cache(
        input_features=feats, decoder_input_ids=tokens, names_filter="encoder.blocks.0.hook_resid_post"
    )
    assert logits.dtype == next(half.parameters()).dtype
    assert torch.isfinite(logits.float()).all()
    logit_lens(half, clips[0])
    if bf16:
        encoder_lens(half, clips[0], layers=[2], max_new_tokens=4)
