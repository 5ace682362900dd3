"""espeak-ng synthesis: real speech that a real Whisper understands."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.espeak import EspeakError, list_voices, phonemize, synthesize


def test_audio_is_16khz_float_and_scales_with_text():
    short, long = synthesize("Hello."), synthesize("Hello. This is a much longer sentence with many more words in it.")
    for a in (short, long):
        assert a.dtype == np.float32 and np.isfinite(a).all() and 0.05 < np.abs(a).max() <= 1.0
    assert 0.3 < short.size / 16000 < 2.0 and long.size > 3 * short.size


def test_voices_and_variants_differ():
    us, gb, female = (synthesize("Good morning", voice=v) for v in ("en-us", "en-gb-scotland", "en-us+f3"))
    assert not np.array_equal(us[: gb.size], gb[: us.size])
    assert not np.array_equal(us[: female.size], female[: us.size])
    assert {"en-us", "en-gb-scotland", "en-029", "fr", "de"} <= set(list_voices())


def test_phonemes():
    assert phonemize("hello") == "həlˈoʊ"
    assert phonemize("hello world") == "həlˈoʊ wˈɜːld"
    assert phonemize("bonjour", voice="fr") != phonemize("bonjour", voice="en-us")


def test_errors():
    with pytest.raises(EspeakError, match="unknown espeak-ng voice 'en-zz'; close:"):
        synthesize("hi", voice="en-zz")
    with pytest.raises(ValueError, match="empty"):
        synthesize("   ")


def test_tiny_en_understands_it(whisper_tiny_en):
    out = whisper_tiny_en.transcribe(synthesize("I would like a cup of coffee please."))
    assert "coffee" in out.text.lower()


def test_language_code_selects_the_voice_that_speaks_it():
    """'en-gb' names no voice file; espeak's 'en' voice lists it, so both give the same audio."""
    from hooked_asr.datasets.espeak import synthesize

    assert np.array_equal(synthesize("hello there", voice="en-gb"), synthesize("hello there", voice="en"))
    assert np.array_equal(synthesize("hi", voice="en-gb+f3"), synthesize("hi", voice="en+f3"))


def test_same_arguments_give_the_same_samples_whatever_came_before():
    """espeak-ng carries waveform state across utterances; synthesize must not."""
    from hooked_asr.datasets.espeak import synthesize

    from hooked_asr.datasets.espeak import phonemize

    first = synthesize("Seven red apples.", voice="en-us")
    synthesize("Something else entirely, said in another voice.", voice="en-gb-scotland+f2")
    phonemize("Text to phonemes changes espeak's state too.")
    assert np.array_equal(synthesize("Seven red apples.", voice="en-us"), first)


def test_language_aliases_are_language_codes_of_listed_voices():
    """Only well-formed codes become aliases: memory after espeak's list must not turn 's' into a voice."""
    import re

    from hooked_asr.datasets.espeak import EspeakError, _language_voices, list_voices, synthesize

    aliases = _language_voices()
    assert aliases["en-gb"] == "en"
    assert all(re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", code) for code in aliases)
    assert set(aliases.values()) <= set(list_voices())
    with pytest.raises(EspeakError, match="unknown espeak-ng voice 's'"):
        synthesize("hello", voice="s")


def test_the_same_call_gives_the_same_samples_in_another_process():
    # Variants with breath noise (+f1..+f5) draw from espeak-ng's own generator, seeded from the
    # clock at start-up: a dataset's audio and its id (the activation store's key) then changed
    # from one run to the next. Each utterance must start from the same seed.
    import hashlib
    import subprocess
    import sys

    import hooked_asr.datasets.espeak as espeak

    # the module alone (it needs only numpy and scipy): a fresh process without torch's start-up
    code = (
        "import hashlib, importlib.util, sys; spec = importlib.util.spec_from_file_location('e', sys.argv[1]); "
        "e = importlib.util.module_from_spec(spec); spec.loader.exec_module(e); "
        "print(hashlib.sha1(e.synthesize('Good morning to you', voice='en-us+f3').tobytes()).hexdigest())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code, espeak.__file__], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    here = hashlib.sha1(synthesize("Good morning to you", voice="en-us+f3").tobytes()).hexdigest()
    assert runs == {here}


def test_word_times_come_with_the_same_samples_and_mark_speech():
    from hooked_asr.datasets.espeak import synthesize_words

    text = "The weather is sunny. Please bring your notebook, and a pen."
    audio, words = synthesize_words(text, voice="en-gb", rate=180)
    assert np.array_equal(audio, synthesize(text, voice="en-gb", rate=180))  # timings of the very audio
    assert [w for w, _, _ in words] == [w.strip(".,") for w in text.split()]
    starts, ends = np.array([s for _, s, _ in words]), np.array([e for _, _, e in words])
    assert (np.diff(starts) > 0).all() and (ends > starts).all() and ends[-1] <= audio.size / 16000 + 1e-9
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * 16000) : int(b * 16000)] ** 2)))  # noqa: E731
    peak = max(rms(s, e) for _, s, e in words)
    # the sentence pause lies between "sunny" and "Please": silent, and cut off both words
    i = [w for w, _, _ in words].index("Please")
    assert starts[i] - ends[i - 1] > 0.1 and rms(ends[i - 1], starts[i]) < 0.02 * peak
    assert all(rms(s, e) > 0.1 * peak for _, s, e in words)  # every span holds speech
