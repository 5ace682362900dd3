"""Gender, accent and language sets: balanced, deterministic, and the label is what differs."""

from __future__ import annotations

import numpy as np

from hooked_asr.datasets.labelled import LANGUAGE_SENTENCES, accent_dataset, gender_dataset, language_dataset

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


def test_gender_balanced_deterministic_and_female_f0_higher(same_audio):
    ds = gender_dataset(4, seed=0, progress=False)
    assert len(ds) == 8 and ds.label_names == ["male", "female"] and ds.label_key == "label"
    np.testing.assert_array_equal(ds.labels(), [0, 1] * 4)
    assert ds.class_counts() == {"male": 4, "female": 4}
    again, other = gender_dataset(4, seed=0, progress=False), gender_dataset(4, seed=1, progress=False)
    assert same_audio(ds, again) and ds.dataset_id == again.dataset_id
    assert not same_audio(ds, other) and ds.dataset_id != other.dataset_id
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
