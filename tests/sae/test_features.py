"""Feature statistics against a direct computation, DTW, labels, the HTML browser's audio."""

from __future__ import annotations

import base64
import io
import re
import wave

import numpy as np
import pytest
import torch

from hooked_asr.sae import ModelFrameSource, SAEConfig, SparseAutoencoder
from hooked_asr.sae.features import (
    Example,
    Word,
    collect_feature_stats,
    dtw_path,
    feature_reports,
    label_from_examples,
    wav_base64,
    word_at,
    write_feature_browser,
)

HOOK = "encoder.blocks.0.hook_resid_post"


def _clips(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * (0.4 + 0.15 * i)))).astype(np.float32) for i in range(n)]


def test_feature_stats_match_direct_computation(model_30s):
    clips = _clips()
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=24, architecture="topk", k=4, hook_name=HOOK), seed=0)
    stats = collect_feature_stats(model_30s, sae, clips, top_k=3, batch_size=2, progress=False)
    src = ModelFrameSource(model_30s, clips, HOOK, batch_size=5)
    x, clip_idx, frame_idx = src.chunk_with_meta(0)
    with torch.no_grad():
        f = sae.encode(x)
    assert stats.n_frames == len(x)
    assert torch.allclose(stats.frequency, (f > 0).float().mean(0))
    assert torch.allclose(stats.hist.sum(1), (f > 0).float().sum(0))  # every firing frame lands in a bin
    for j in range(sae.d_sae):
        # Top example = global max; its clip and frame are where that max occurs.
        v = f[:, j].max()
        if v <= 0:
            assert stats.top_clip[j, 0] == -1
            continue
        assert torch.isclose(stats.top_values[j, 0], v)
        n = int(stats.top_frame[j, 0])
        row = (clip_idx == stats.top_clip[j, 0]) & (frame_idx == n)
        assert torch.isclose(f[row, j][0], v)
        # Examples are from distinct clips, in decreasing order.
        good = stats.top_clip[j] >= 0
        assert len(set(stats.top_clip[j][good].tolist())) == int(good.sum())
        assert (stats.top_values[j][:-1] >= stats.top_values[j][1:]).all()


def test_dtw_follows_a_planted_monotonic_path():
    n_tok, n_frames = 4, 20
    starts = [0, 3, 9, 15]
    cost = np.ones((n_tok, n_frames))
    for t, s in enumerate(starts):
        end = starts[t + 1] if t + 1 < n_tok else n_frames
        cost[t, s:end] = 0.0
    rows, cols = dtw_path(cost)
    assert cost[rows, cols].sum() == 0.0
    first = [int(cols[rows == t].min()) for t in range(n_tok)]
    assert first == starts
    assert (np.diff(rows) >= 0).all() and (np.diff(cols) >= 0).all()


def test_word_at_and_labels():
    words = [Word("hello", 0.1, 0.5), Word("world", 0.5, 0.9)]
    assert word_at(words, 0.3) == "hello" and word_at(words, 0.5) == "world"
    assert word_at(words, 0.93) == "world" and word_at(words, 2.0) == ""

    def ex(word, clip, frame, pad=False):
        return Example(1.0, clip, frame, frame * 0.02, word, word, pad)

    assert label_from_examples([ex("cat", i, 10 * i) for i in range(4)] + [ex("dog", 9, 3)]).startswith("word 'cat'")
    assert label_from_examples([ex("", i, 500 + i, True) for i in range(5)]).startswith("non-speech")
    assert label_from_examples([ex(w, i, 7) for i, w in enumerate("abcde")]).startswith("positional (frame ~7")
    assert label_from_examples([ex(w, i, 30 * i) for i, w in enumerate("abcde")]).startswith("mixed")


def test_browser_embeds_the_audio_around_each_top_frame(model_30s, tmp_path):
    clips = _clips(3)
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=8, architecture="topk", k=2, hook_name=HOOK), seed=0)
    stats = collect_feature_stats(model_30s, sae, clips, top_k=2, progress=False)
    feats = [int(i) for i in stats.frequency.argsort(descending=True)[:2]]
    reports = feature_reports(model_30s, stats, clips, feats, progress=False)
    out = write_feature_browser(model_30s, sae, stats, reports, clips, tmp_path / "browser", snippet_seconds=0.4)
    page = (out / "features" / f"feature_{feats[0]}.html").read_text()
    players = re.findall(r"data:audio/wav;base64,([A-Za-z0-9+/=]+)", page)
    ex = reports[0].examples[0]
    with wave.open(io.BytesIO(base64.b64decode(players[0]))) as w:
        got = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767
        assert w.getframerate() == 16000
    lo = max(0, ex.frame - 10) * 320
    want = clips[ex.clip][lo : (ex.frame + 10) * 320]
    assert np.allclose(got, want, atol=1 / 32767 + 1e-6)
    assert f"feature_{feats[1]}.html" in (out / "index.html").read_text()


def test_wav_base64_roundtrip():
    x = np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5
    with wave.open(io.BytesIO(base64.b64decode(wav_base64(x)))) as w:
        y = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767
    assert np.abs(x - y).max() <= 1 / 32767
