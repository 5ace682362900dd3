"""Times are never negative (issue 28, item 4): a clip of <= 30 ms has at most one encoder
frame of audio, so the alignment heads' attention over frames is one value per token (its
standardisation divided 0 by 0) or nothing at all, and the DTW path then ran along column -1:
segment and word times of -0.02 s, an SRT cue of -1:59:59,980."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("n_samples", [16, 160, 320, 480, 640])
def test_short_clip_word_and_segment_times_are_not_negative(whisper_tiny_en, n_samples):
    audio = (0.3 * np.sin(np.arange(n_samples) / 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = whisper_tiny_en.transcribe(audio, word_timestamps=True)
    assert r.segments and r.words
    for s in r.segments:
        assert 0 <= s.start <= s.end, (s.start, s.end)
    for w in r.words:
        assert 0 <= w.start <= w.end, (w.word, w.start, w.end)


def test_alignment_matrix_of_one_frame_is_finite(whisper_tiny_en):
    from hooked_asr.models.decoding.timing import alignment_matrix

    feats = whisper_tiny_en.prepare_features(np.full(480, 0.1, dtype=np.float32), allow_silence=True)
    tokens = whisper_tiny_en.tokenizer.encode(" you")
    for num_frames in (1, 3):
        m, _ = alignment_matrix(whisper_tiny_en, tokens, input_features=feats["input_features"], num_frames=num_frames)
        assert m.shape[-1] >= 1 and torch.isfinite(m).all(), (num_frames, m)
