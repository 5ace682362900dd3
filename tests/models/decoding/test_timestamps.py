"""Whisper's timestamp rules equal openai-whisper's ``ApplyTimestampRules`` on every kind of history,
and the log-probs returned beside the masked scores are ``log_softmax`` of them, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hooked_asr.models.decoding.timestamps import TimestampRules

EOT, NO_TS, TB, VOCAB = 50256, 50362, 50363, 51864  # tiny.en's


def _histories(gen: torch.Generator, rows: int, t: int) -> torch.Tensor:
    """Rows of ``t`` generated tokens: text, single and paired timestamps, never decreasing."""
    out = torch.randint(0, EOT, (rows, t), generator=gen)
    for r in range(rows):
        now = TB + int(torch.randint(0, 20, (1,), generator=gen))
        for i in range(t):
            if torch.rand(1, generator=gen) < 0.4:
                now += int(torch.randint(0, 3, (1,), generator=gen))
                out[r, i] = min(now, VOCAB - 1)
    return out


@pytest.mark.parametrize("t", [0, 1, 2, 5])
def test_rules_equal_openai_whisper_and_log_probs_are_log_softmax_of_the_scores(t):
    ApplyTimestampRules = pytest.importorskip("whisper.decoding").ApplyTimestampRules
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(multilingual=False)
    assert (tok.eot, tok.no_timestamps, tok.timestamp_begin) == (EOT, NO_TS, TB)
    ours = TimestampRules(TB, NO_TS, EOT, 50)
    theirs = ApplyTimestampRules(tok, sample_begin=3, max_initial_timestamp_index=50)
    gen = torch.Generator().manual_seed(t)
    forced = 0
    for trial in range(6):
        rows = 8
        logits = torch.randn(rows, VOCAB, generator=gen) * 3
        # some rows with heavy timestamp mass, so that the forcing rule fires on part of the batch
        logits[: rows // 2, TB:] += float(trial)
        generated = _histories(gen, rows, t)
        tokens = torch.cat([torch.full((rows, 3), EOT), generated], 1)
        expected = logits.clone()
        theirs.apply(expected, tokens)
        scores, logprobs = ours.apply_with_log_probs(logits.clone(), generated)
        assert torch.equal(scores, expected)
        assert torch.equal(logprobs, F.log_softmax(scores, dim=-1))
        assert torch.equal(ours.apply(logits.clone(), generated), expected)
        forced += int((expected[:, :TB] == float("-inf")).all(-1).sum())
    assert t == 0 or forced > 0  # the forcing rule was exercised
