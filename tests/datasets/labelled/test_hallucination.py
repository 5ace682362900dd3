"""Hallucination-prone inputs, and correct-vs-hallucinated sets matched in reference length."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.labelled import hallucination_dataset, hallucination_prone_inputs
from hooked_asr.text import word_error_rate

SR = 16000


class FakeModel:
    """transcribe(list of arrays) -> objects with .text, looked up by the clip's first sample."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def transcribe(self, audio, max_new_tokens=None):
        self.calls += 1

        class R:
            def __init__(self, text):
                self.text = text

        return [R(self.table[round(float(a[0]), 6)]) for a in audio]


def _clips_refs_hyps():
    refs = [
        "one two three",
        "one two three four",
        "alpha beta gamma",
        "a b c d e f",
        "red green",
        "red green blue",
        "cats and dogs",
        "yes no maybe so",
        "long reference with many words here",
        "short one",
    ]
    hyps = [
        "one two three",
        "one two three four",
        "alpha beta gamma",
        "a b c d e f",
        "red green",
        "totally wrong words here now",
        "cats",
        "yes no maybe so",
        "x",
        "short one",
    ]
    clips = [np.full(100, (i + 1) / 100, dtype=np.float32) for i in range(len(refs))]
    table = {round((i + 1) / 100, 6): h for i, h in enumerate(hyps)}
    return clips, refs, hyps, table


def test_hallucination_dataset_groups_match_wer():
    clips, refs, hyps, table = _clips_refs_hyps()
    wers = [word_error_rate(r, h) for r, h in zip(refs, hyps)]
    ds = hallucination_dataset(FakeModel(table), clips, refs, n_per_class=3, batch_size=4, progress=False)
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 3)
    for i in range(len(ds)):
        it = ds[i]
        src = it["source_index"]
        assert it["wer"] == pytest.approx(wers[src]) and it["transcript"] == hyps[src] and it["text"] == refs[src]
        np.testing.assert_array_equal(it["audio"], clips[src])
        assert (it["wer"] == 0.0) if it["label"] == 0 else (it["wer"] >= 0.5)
    # highest WER first; partners are the zero-WER items closest in reference length
    high = [ds[2 * p + 1] for p in range(3)]
    assert [h["source_index"] for h in high] == [5, 8, 6]  # WER 5/3, 1.0 (6 words, x), 2/3
    for p in range(3):
        assert abs(ds[2 * p]["ref_words"] - ds[2 * p + 1]["ref_words"]) <= 2
    assert ds[0]["ref_words"] == 3 and ds[1]["ref_words"] == 3
    assert len({ds[2 * p]["source_index"] for p in range(3)}) == 3


def test_hallucination_dataset_unequal_classes_stay_length_matched():
    """[BT] §4.2's 150 zero-WER vs 200 highest-WER: more label-1 items than pairs, each
    extra one matched in length to a zero-WER clip already used."""
    clips, refs, hyps, table = _clips_refs_hyps()
    ds = hallucination_dataset(FakeModel(table), clips, refs, n_per_class=2, n_wrong=3, progress=False)
    assert list(ds.labels()) == [0, 1, 0, 1, 1]
    extra = ds[4]
    assert extra["source_index"] == 6 and extra["wer"] >= 0.5  # the next-highest WER after the two pairs (5, 8)
    partner = ds[2 * extra["pair"]]
    assert partner["label"] == 0 and abs(partner["ref_words"] - extra["ref_words"]) <= 2
    with pytest.raises(ValueError, match="n_wrong"):
        hallucination_dataset(FakeModel(table), clips, refs, n_per_class=3, n_wrong=2, progress=False)


def test_hallucination_dataset_from_dataset_and_errors():
    clips, refs, hyps, table = _clips_refs_hyps()
    items = [{"audio": c, "text": r, "kind": "k", "label": 7} for c, r in zip(clips, refs)]
    with pytest.warns(UserWarning, match="asked for 9 per class, got 3"):
        ds = hallucination_dataset(FakeModel(table), items, n_per_class=9, progress=False)
    assert len(ds) == 6 and ds[0]["kind"] == "k" and ds[0]["source_label"] == 7
    with pytest.raises(ValueError, match="asked for 9"):
        hallucination_dataset(FakeModel(table), items, n_per_class=9, strict=True, progress=False)
    with pytest.raises(ValueError, match="10 clips but 9 references"):
        hallucination_dataset(FakeModel(table), clips, refs[:9], progress=False)
    with pytest.raises(ValueError, match="no zero-WER / high-WER pairs"):
        hallucination_dataset(FakeModel(table), clips[:5], refs[:5], progress=False)
    with pytest.raises(ValueError, match="carry no 'text'"):
        hallucination_dataset(FakeModel(table), clips, progress=False)


def test_hallucination_prone_inputs(same_audio):
    ds = hallucination_prone_inputs(2, seed=0, progress=False)
    assert ds.label_names == ["clean", "noisy", "truncated", "silence_padded", "fast", "repeated"]
    assert ds.class_counts() == dict.fromkeys(ds.label_names, 2)
    for it in ds:
        assert it["audio"].size <= 30 * SR and np.abs(it["audio"]).max() > 0
        if it["kind"] == "silence_padded":
            assert it["seconds"] > 12
        if it["kind"] == "repeated":
            assert len(set(it["text"].split())) == 1
    assert same_audio(ds, hallucination_prone_inputs(2, seed=0, progress=False))


@pytest.mark.slow
def test_hallucination_dataset_on_tiny_en(whisper_tiny_en):
    src = hallucination_prone_inputs(2, seed=0, kinds=("clean", "truncated", "repeated"), progress=False)
    ds = hallucination_dataset(
        whisper_tiny_en, src, n_per_class=1, max_length_diff=None, max_new_tokens=32, progress=False
    )
    zero = [ds[i] for i in range(len(ds)) if ds[i]["label"] == 0]
    assert zero and all(it["wer"] == 0.0 for it in zero)
    again = whisper_tiny_en.transcribe([it["audio"] for it in zero], max_new_tokens=32)
    assert all(word_error_rate(it["text"], r.text) == 0.0 for it, r in zip(zero, again))
    assert all(ds[i]["wer"] >= 0.5 for i in range(len(ds)) if ds[i]["label"] == 1)
