"""Text metrics of patched transcripts (hooked_asr/patching/metrics.py)."""

from __future__ import annotations

import pytest

from hooked_asr.patching import contains_word, word_restored
from hooked_asr.text import word_error_rate


def test_text_metrics():
    assert word_error_rate("the cat sat", "The cat sat.") == 0.0
    assert word_error_rate("the cat sat on", "the dog sat") == pytest.approx(2 / 4)  # 1 substitution + 1 deletion
    assert contains_word("I ate white rice.", "rice") and not contains_word("prices", "rice")
    assert word_restored("white lice", "lice", "rice") and not word_restored("white rice", "lice", "rice")


def test_continuation_logprob_is_the_mean_log_softmax_of_the_continuation():
    import torch

    from hooked_asr.patching import continuation_logprob

    g = torch.Generator().manual_seed(0)
    logits, tokens = 5 * torch.randn(3, 7, 50, generator=g), torch.randint(0, 50, (1, 7), generator=g)
    want = torch.stack(
        [
            torch.stack([torch.log_softmax(logits[b, t - 1], -1)[tokens[0, t]] for t in range(2, 7)]).mean()
            for b in range(3)
        ]
    )
    torch.testing.assert_close(continuation_logprob(logits, tokens, 2), want, atol=1e-5, rtol=0)
