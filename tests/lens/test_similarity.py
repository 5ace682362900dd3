"""Token similarity (hooked_asr/lens/similarity.py): embedding cosine and phoneme distance of
the top-k candidates; a clear error without espeak."""

from __future__ import annotations

import math
import sys

import pytest
import torch.nn.functional as F

from hooked_asr.lens import logit_lens, token_similarity
from hooked_asr.text import edit_distance, phoneme_error_rate
from tests.lens.conftest import features


def test_token_similarity_cosine_and_phoneme_distance(pair, monkeypatch):
    hf, model = pair
    r = logit_lens(model, features(hf, 2), [500, 600])
    sim = token_similarity(model, r, k=5, phonemes=False)
    E = hf.model.decoder.embed_tokens.weight.detach()
    l, s, j = 1, 0, 2
    a, b = E[int(r.tokens[s])], E[int(r.topk_ids[l, s, j])]
    expect = math.nan if int(r.topk_ids[l, s, j]) == int(r.tokens[s]) else float(F.cosine_similarity(a, b, dim=0))
    got = float(sim.cosine[l, s, j])
    assert (math.isnan(expect) and math.isnan(got)) or got == pytest.approx(expect, abs=1e-5)
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], [1, 2]) == 2
    assert phoneme_error_rate("kˈæt", "bæt") == pytest.approx(1 / 3)  # stress marks are not phonemes
    assert math.isnan(phoneme_error_rate("", "a"))
    # Without espeak the phoneme path fails with a message that says what to install.
    monkeypatch.setitem(sys.modules, "hooked_asr.datasets.espeak", None)
    with pytest.raises(RuntimeError, match="espeakng-loader"):
        token_similarity(model, r, phonemes=True)
