"""Labelled dataset builders: determinism, balance, the property each label stands for."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.labelled import (
    CATEGORY_WORDS,
    LANGUAGE_SENTENCES,
    SENTENCES,
    LabelledDataset,
    accent_dataset,
    gender_dataset,
    hallucination_dataset,
    hallucination_prone_inputs,
    language_dataset,
    noisy_dataset,
    semantic_dataset,
    speech_nonspeech_dataset,
)
from hooked_asr.datasets.nonspeech import measure_snr_db, mix_at_snr, nonspeech_clip
from hooked_asr.text import word_error_rate

SR = 16000


def f0_autocorr(audio: np.ndarray, sr: int = SR) -> float:
    """Median F0 over voiced 40 ms frames: autocorrelation peak in 60-500 Hz with r > 0.5."""
    fl, hop, lo, hi = int(0.04 * sr), int(0.01 * sr), int(sr / 500), int(sr / 60)
    out = []
    for s in range(0, audio.size - fl, hop):
        x = audio[s : s + fl].astype(np.float64)
        x -= x.mean()
        if np.sqrt((x**2).mean()) < 0.02:
            continue
        spec = np.fft.rfft(x, 2 * fl)
        r = np.fft.irfft(np.abs(spec) ** 2)[:fl]
        r = r / r[0]
        k = lo + int(np.argmax(r[lo:hi]))
        if r[k] > 0.5:
            out.append(sr / k)
    return float(np.median(out))


def _same_audio(a: LabelledDataset, b: LabelledDataset) -> bool:
    return len(a) == len(b) and all(np.array_equal(a[i]["audio"], b[i]["audio"]) for i in range(len(a)))


def test_gender_balanced_deterministic_and_female_f0_higher():
    ds = gender_dataset(4, seed=0, progress=False)
    assert len(ds) == 8 and ds.label_names == ["male", "female"] and ds.label_key == "label"
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 4)
    assert ds.class_counts() == {"male": 4, "female": 4}
    again, other = gender_dataset(4, seed=0, progress=False), gender_dataset(4, seed=1, progress=False)
    assert _same_audio(ds, again) and ds.dataset_id == again.dataset_id
    assert not _same_audio(ds, other) and ds.dataset_id != other.dataset_id
    assert "gender_dataset" in ds.dataset_id and "seed=0" in ds.dataset_id
    f0 = {0: [], 1: []}
    for i in range(len(ds)):
        item = ds[i]
        assert item["audio"].dtype == np.float32 and item["audio"].ndim == 1
        assert isinstance(item["text"], str) and item["label_name"] == ds.label_names[item["label"]]
        f0[item["label"]].append(f0_autocorr(item["audio"]))
    for j in range(4):  # each pair: same sentence and base voice, different variant
        m, f = ds[2 * j], ds[2 * j + 1]
        assert m["text"] == f["text"] and m["base_voice"] == f["base_voice"] and "+f" in f["voice"]
    assert np.mean(f0[1]) > 1.5 * np.mean(f0[0])
    assert min(f0[1]) > max(f0[0])


def test_accent_and_language():
    acc = accent_dataset(n_per_class=2, seed=0, progress=False)
    assert acc.label_names == ["en-us", "en-gb", "en-gb-scotland", "en-029"]
    np.testing.assert_array_equal(acc.labels(), [0, 1, 2, 3] * 2)
    group = [acc[i] for i in range(4)]
    assert len({g["text"] for g in group}) == 1 and len({g["voice"] for g in group}) == 4
    assert group[1]["voice"].split("+")[0] == "en"  # en-gb is espeak's "en"
    assert len({g["audio"].size for g in group}) > 1
    lang = language_dataset(("en", "de", "fr"), n_per_class=2, seed=0, progress=False)
    np.testing.assert_array_equal(lang.labels(), [0, 1, 2] * 2)
    first = [lang[i] for i in range(3)]
    sid = first[0]["sentence_id"]
    assert [x["text"] for x in first] == [LANGUAGE_SENTENCES[k][sid] for k in ("en", "de", "fr")]
    assert all(len(v) == len(LANGUAGE_SENTENCES["en"]) for v in LANGUAGE_SENTENCES.values())


def test_speech_nonspeech_matched_durations():
    ds = speech_nonspeech_dataset(6, seed=0, progress=False)
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 6)
    assert ds.label_names == ["nonspeech", "speech"]
    kinds = set()
    for j in range(6):
        other, speech = ds[2 * j], ds[2 * j + 1]
        assert other["audio"].size == speech["audio"].size and other["seconds"] == speech["seconds"]
        assert speech["kind"] == "speech" and speech["text"] in SENTENCES and other["text"] == ""
        kinds.add(other["kind"])
        assert 0.19 < np.abs(other["audio"]).max() < 0.81
    assert len(kinds) == 6  # six pairs: each of the six kinds once


def test_noisy_realised_snr():
    ds = noisy_dataset(3, snr_db=5.0, seed=0, progress=False)
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 3)
    for j in range(3):
        clean, noisy = ds[2 * j], ds[2 * j + 1]
        assert clean["text"] == noisy["text"] and clean["noise"] == "none" and noisy["noise"] in ("white", "pink", "brown")
        noise = nonspeech_clip(noisy["noise"], clean["audio"].size / SR, noisy["clip_seed"])
        mixed, s, z = mix_at_snr(clean["audio"], noise, 5.0, return_components=True)
        np.testing.assert_array_equal(mixed, noisy["audio"])
        assert measure_snr_db(s, z) == pytest.approx(5.0, abs=0.1)
        # measured against the stored clean clip (rescaling, if any, is a common factor)
        k = float(np.dot(s, clean["audio"]) / np.dot(clean["audio"], clean["audio"]))
        assert measure_snr_db(k * clean["audio"], noisy["audio"] - k * clean["audio"]) == pytest.approx(5.0, abs=0.1)


def test_semantic_differs_only_in_the_word():
    ds = semantic_dataset(("animals", "vehicles", "body parts"), n_per_class=4, seed=0, progress=False)
    assert ds.label_names == ["animals", "vehicles", "body_parts"]
    np.testing.assert_array_equal(ds.labels(), [0, 1, 2] * 4)
    words = set()
    for i in range(len(ds)):
        it = ds[i]
        assert it["word"] in CATEGORY_WORDS[it["label_name"]]
        assert it["text"] == f"I really like the {it['word']}."
        assert (it["voice"], it["rate"], it["carrier"]) == ("en-us", 160, "I really like the {word}.")
        words.add(it["word"])
    assert len(words) == len(ds)
    assert all(len(v) >= 12 for v in CATEGORY_WORDS.values()) and len(CATEGORY_WORDS) >= 8
    assert len(SENTENCES) >= 40
    two = semantic_dataset(n_per_class=20, seed=1, carrier=["I like the {word}.", "Look at the {word} now."],
                           progress=False)
    assert len(two) == 40 and {it["carrier"] for it in two.metadata()} == {"I like the {word}.", "Look at the {word} now."}


def test_errors_are_clear():
    with pytest.raises(ValueError, match="n_per_class must be an integer >= 1"):
        gender_dataset(0)
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        gender_dataset(1, voices=("en-zz",))
    with pytest.raises(ValueError, match="unknown accent 'en-au'; valid: en-us, en-gb"):
        accent_dataset(("en-us", "en-au"), 1)
    with pytest.raises(ValueError, match="unknown language 'xx'; valid: en, de, fr, es"):
        language_dataset(("en", "xx"), 1)
    with pytest.raises(ValueError, match="unknown category 'tools'; valid: fruits, clothing"):
        semantic_dataset(("fruits", "tools"), 1)
    with pytest.raises(ValueError, match="too many"):
        semantic_dataset(("fruits", "colors"), 17)
    with pytest.raises(ValueError, match="finite"):
        noisy_dataset(1, snr_db=float("nan"))
    with pytest.raises(ValueError, match="valid kinds"):
        speech_nonspeech_dataset(1, kinds=("violin",))


def test_save_load_roundtrip_and_subsets(tmp_path):
    ds = speech_nonspeech_dataset(2, seed=3, progress=False)
    ds.save(tmp_path / "d")
    assert (tmp_path / "d" / "metadata.csv").read_text().splitlines()[0].startswith("label,")
    back = LabelledDataset.load(tmp_path / "d")
    assert back.dataset_id == ds.dataset_id and back.label_names == ds.label_names and len(back) == len(ds)
    assert back.metadata() == ds.metadata()
    assert _same_audio(ds, back)  # float32 wav: bit-exact
    sub = ds[1:3]
    assert isinstance(sub, LabelledDataset) and len(sub) == 2 and sub.dataset_id != ds.dataset_id
    np.testing.assert_array_equal(sub[0]["audio"], ds[1]["audio"])
    assert list(ds[-1]) == list(ds[len(ds) - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        LabelledDataset.load(tmp_path)


def test_items_fit_the_activation_extractor_contract():
    """Every value is audio, a number (label tensors) or a string (metadata); keys agree across items."""
    for ds in (noisy_dataset(1, progress=False), hallucination_prone_inputs(1, progress=False)):
        keys = {tuple(sorted(ds[i])) for i in range(len(ds))}
        assert len(keys) == 1
        for i in range(len(ds)):
            for k, v in ds[i].items():
                assert k == "audio" or isinstance(v, (int, float, str)), (k, v)


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
    refs = ["one two three", "one two three four", "alpha beta gamma", "a b c d e f", "red green",
            "red green blue", "cats and dogs", "yes no maybe so", "long reference with many words here",
            "short one"]
    hyps = ["one two three", "one two three four", "alpha beta gamma", "a b c d e f", "red green",
            "totally wrong words here now", "cats", "yes no maybe so", "x", "short one"]
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


def test_hallucination_prone_inputs():
    ds = hallucination_prone_inputs(2, seed=0, progress=False)
    assert ds.label_names == ["clean", "noisy", "truncated", "silence_padded", "fast", "repeated"]
    assert ds.class_counts() == dict.fromkeys(ds.label_names, 2)
    for it in ds:
        assert it["audio"].size <= 30 * SR and np.abs(it["audio"]).max() > 0
        if it["kind"] == "silence_padded":
            assert it["seconds"] > 12
        if it["kind"] == "repeated":
            assert len(set(it["text"].split())) == 1
    assert _same_audio(ds, hallucination_prone_inputs(2, seed=0, progress=False))


@pytest.mark.slow
def test_hallucination_dataset_on_tiny_en(whisper_tiny_en):
    src = hallucination_prone_inputs(2, seed=0, kinds=("clean", "truncated", "repeated"), progress=False)
    ds = hallucination_dataset(whisper_tiny_en, src, n_per_class=1, max_length_diff=None, max_new_tokens=32,
                               progress=False)
    zero = [ds[i] for i in range(len(ds)) if ds[i]["label"] == 0]
    assert zero and all(it["wer"] == 0.0 for it in zero)
    again = whisper_tiny_en.transcribe([it["audio"] for it in zero], max_new_tokens=32)
    assert all(word_error_rate(it["text"], r.text) == 0.0 for it, r in zip(zero, again))
    assert all(ds[i]["wer"] >= 0.5 for i in range(len(ds)) if ds[i]["label"] == 1)


def test_extract_activations_reads_a_built_dataset(tmp_path):
    from hooked_asr import HookedWhisper
    from hooked_asr.activations import extract_activations
    from tests.conftest import make_hf_whisper_30s

    # a random 1+1-layer Whisper with the real 30-s window (1500 frames)
    model = HookedWhisper.from_hf(make_hf_whisper_30s(max_target_positions=16, init="hf"))
    ds = gender_dataset(2, seed=0, progress=False)
    hook = "encoder.blocks.0.hook_resid_post"
    store = extract_activations(model, ds, [hook], tmp_path / "store", batch_size=4, max_new_tokens=2,
                                progress=False)
    assert store.n_items == len(ds) and store.spec["dataset"] == ds.dataset_id
    assert store.labels("label").tolist() == ds.labels().tolist()
    assert store.load(hook).shape[0] == len(ds)
