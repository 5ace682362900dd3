"""Bad transcription options are refused before any decoding, with a message naming the option
and its value (issue 28, item 12): NaN/inf/str temperatures, NaN length_penalty, NaN/inf patience,
non-integer beam_size / best_of / max_new_tokens, bytes as initial_prompt. best_of at temperature
0 is openai-whisper's rule (used only above 0): accepted with a warning that says so. Special-token
text in a prompt is encoded as the text it is, not as special tokens."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hooked_asr.models.decoding.options import TranscribeOptions

BAD = [
    (dict(temperature=float("nan")), r"temperature=nan"),
    (dict(temperature=float("inf")), r"temperature=inf"),
    (dict(temperature=(0.0, float("nan"))), r"temperature=\(0.0, nan\)"),
    (dict(temperature="0.5"), r"temperature='0.5'.*number"),
    (dict(temperature=[0.0, "0.2"]), r"temperature=\[0.0, '0.2'\]"),
    (dict(temperature=True), r"temperature=True"),
    (dict(temperature=()), r"temperature=\(\)"),
    (dict(temperature=-0.1), r"temperature=-0.1.*>= 0"),
    (dict(length_penalty=float("nan")), r"length_penalty=nan"),
    (dict(length_penalty="1"), r"length_penalty='1'"),
    (dict(beam_size=5, patience=float("nan")), r"patience=nan"),
    (dict(beam_size=5, patience=float("inf")), r"patience=inf"),
    (dict(beam_size=2.5), r"beam_size=2.5.*integer"),
    (dict(beam_size=True), r"beam_size=True.*integer"),
    (dict(beam_size="5"), r"beam_size='5'.*integer"),
    (dict(best_of=2.5, temperature=0.5), r"best_of=2.5.*integer"),
    (dict(max_new_tokens=2.5), r"max_new_tokens=2.5.*integer"),
    (dict(max_new_tokens=0), r"max_new_tokens=0"),
    (dict(initial_prompt=b"hello"), r"initial_prompt=b'hello'.*bytes.*decode"),
    (dict(initial_prompt=[1, 2.5]), r"initial_prompt.*2.5"),
    (dict(initial_prompt=[-1]), r"initial_prompt.*-1"),
    (dict(compression_ratio_threshold=float("nan")), r"compression_ratio_threshold=nan"),
    (dict(logprob_threshold=float("nan")), r"logprob_threshold=nan"),
    (dict(no_speech_threshold="0.6"), r"no_speech_threshold='0.6'"),
    (dict(suppress_tokens="1,x"), r"suppress_tokens='1,x'.*token ids"),
    (dict(suppress_tokens=[1.5]), r"suppress_tokens=\[1.5\]"),
    (dict(suppress_tokens=[-2]), r"suppress_tokens=\[-2\]"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[repr(k) for k, _ in BAD])
def test_bad_option_is_refused_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TranscribeOptions(**kwargs)


GOOD = [
    dict(temperature=0),
    dict(temperature=np.float32(0.2)),
    dict(temperature=(0.0, 0.2, 0.4)),
    dict(temperature=np.array([0.0, 0.5])),
    dict(beam_size=np.int64(3), patience=1.5, length_penalty=0.6),
    dict(max_new_tokens=np.int32(7)),
    dict(initial_prompt="a prompt"),
    dict(initial_prompt=(1, 2, 3)),
    dict(logprob_threshold=None, compression_ratio_threshold=None, no_speech_threshold=None),
    dict(logprob_threshold=-math.inf),
    dict(suppress_tokens="-1"),
    dict(suppress_tokens=" 1, 2 "),
    dict(suppress_tokens=[-1, 5]),
    dict(suppress_tokens=""),
    dict(suppress_tokens=None),
]


@pytest.mark.parametrize("kwargs", GOOD, ids=[repr(k) for k in GOOD])
def test_valid_options_are_kept_as_plain_python_numbers(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        o = TranscribeOptions(**kwargs)
    assert all(type(t) is float for t in o.temperature)
    for name in ("beam_size", "best_of", "max_new_tokens"):
        assert getattr(o, name) is None or type(getattr(o, name)) is int


def test_best_of_at_temperature_zero_is_accepted_and_says_it_has_no_effect():
    """openai-whisper's transcribe drops best_of at temperature 0 (it samples only above 0)."""
    with pytest.warns(UserWarning, match=r"best_of=5 is used only at temperature > 0"):
        TranscribeOptions(best_of=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TranscribeOptions(best_of=5, temperature=(0.0, 0.2))  # the fallback samples with it


def test_bad_options_are_refused_by_transcribe_before_decoding(whisper_tiny_en):
    audio = np.zeros(1600, dtype=np.float32)
    for kwargs, message in BAD:
        with pytest.raises(ValueError, match=message):
            whisper_tiny_en.transcribe(audio, allow_silence=True, **kwargs)


def test_special_token_text_in_a_prompt_is_plain_text(whisper_tiny_en):
    """A prompt that mentions ``<|endoftext|>`` must not end the prompt with the real token."""
    tok = whisper_tiny_en.tokenizer
    prompt = "see <|endoftext|> and <|notimestamps|>"
    ids = whisper_tiny_en._initial_tokens(TranscribeOptions(initial_prompt=prompt))
    assert not any(tok.is_special(i) for i in ids), ids
    assert tok.decode(ids) == " " + prompt


def test_generate_refuses_bad_arguments(whisper_tiny_en):
    import torch

    feats = torch.zeros(1, 80, 3000)
    prompt = whisper_tiny_en.sot_sequence()
    for kwargs, message in [
        (dict(num_beams=2.5), r"num_beams=2.5.*integer"),
        (dict(max_new_tokens=2.5), r"max_new_tokens=2.5.*integer"),
        (dict(do_sample=True, temperature=float("nan")), r"temperature=nan"),
        (dict(do_sample=True, temperature=0.0), r"temperature=0.0"),
        (dict(num_beams=2, length_penalty=float("nan")), r"length_penalty=nan"),
        (dict(num_beams=2, patience=float("inf")), r"patience=inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            whisper_tiny_en.generate(feats, prompt, **kwargs)
