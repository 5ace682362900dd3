"""Encoder lens (hooked_asr/lens/encoder.py): it reads the same states as
``encode(stop_at_layer)``, its last layer reproduces the ordinary transcript and every batched
row equals decoding that layer alone."""

from __future__ import annotations

import pytest
import torch

from hooked_asr.lens import encoder_lens, encoder_lens_states
from hooked_asr.repetition import find_repetition_loop
from tests.lens.conftest import features


def test_encoder_lens_states_equal_truncated_encoder(pair):
    hf, model = pair
    feats = {"input_features": features(hf, 3)}
    states = encoder_lens_states(model, feats, [0, 1])
    with torch.no_grad():
        for i, l in enumerate([0, 1]):
            expect = model.finish_encoder(model.encode(feats["input_features"], stop_at_layer=l + 1))
            torch.testing.assert_close(states[i : i + 1], expect, atol=0, rtol=0)
        torch.testing.assert_close(states[-1:], model.encode(feats["input_features"]), atol=1e-6, rtol=1e-6)


def test_encoder_lens_last_layer_is_the_transcript_and_rows_equal_single_layer_decoding(pair):
    hf, model = pair
    feats = features(hf, 4)
    final = model.transcribe(feats, max_new_tokens=10)[0]
    res = encoder_lens(model, feats, max_new_tokens=10, final=final)
    assert [r.layer for r in res.layers] == [0, 1]
    last = res.layers[-1]
    assert last.tokens == final.tokens and last.common_prefix == len(final.tokens)
    assert last.matches_final_prefix == bool(final.tokens)
    # Batched decoding of layer 0 equals decoding it alone.
    states = encoder_lens_states(model, {"input_features": feats}, [0])
    alone = model.generate(feats, final.prompt, max_new_tokens=10, encoder_hidden_states=states)
    toks = alone.tokens[0].tolist()
    toks = toks[: toks.index(model.cfg.eos_token_id)] if model.cfg.eos_token_id in toks else toks
    assert res.layers[0].tokens == toks
    assert res.layers[0].repetition_loop == (find_repetition_loop(toks) is not None)
    with pytest.raises(ValueError, match=r"encoder has 2 blocks \(0-1\)"):
        encoder_lens(model, feats, layers=[2], final=final)
