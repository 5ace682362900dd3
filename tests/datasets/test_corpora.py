"""Corpus loaders on tiny corpora written here in each on-disk layout (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from hooked_asr.datasets.corpora import CorpusError, load_common_voice, load_librispeech, normalize_gender
from hooked_asr.datasets.espeak import synthesize
from hooked_asr.datasets.labelled import LabelledDataset

SR = 16000
LS_UTTS = [  # speaker, chapter, utt, text, voice
    (1089, 134686, 0, "HE HOPED THERE WOULD BE STEW FOR DINNER", "en-us"),
    (1089, 134686, 1, "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM", "en-us"),
    (121, 121726, 0, "ALSO A POPULAR CONTRIVANCE", "en-us+f3"),
    (121, 123852, 3, "THE NEXT DAY IT RAINED", "en-us+f3"),
    (237, 126133, 2, "WHERE IS THE GARDEN", "en+f2"),
]
CV_ROWS = [  # client, file, sentence, gender, accent, voice, write as
    ("c1", "common_voice_en_1.wav", 'She said "hello" to me.', "female_feminine", "England English", "en+f3", "wav"),
    (
        "c2",
        "common_voice_en_2.mp3",
        "The sun is bright today.",
        "male_masculine",
        "United States English",
        "en-us",
        "mp3",
    ),
    ("c3", "common_voice_en_3.wav", "Please close the door.", "", "", "en-029", "wav"),
    ("c1", "common_voice_en_4.wav", "We walked home slowly.", "female_feminine", "England English", "en+f3", "wav"),
]


@pytest.fixture(scope="module")
def librispeech_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls")
    base = root / "LibriSpeech"
    audio = {}
    for spk, chap, utt, text, voice in LS_UTTS:
        d = base / "test-clean" / str(spk) / str(chap)
        d.mkdir(parents=True, exist_ok=True)
        uid = f"{spk}-{chap}-{utt:04d}"
        a = synthesize(text.lower(), voice=voice)
        sf.write(str(d / f"{uid}.flac"), a, SR)
        audio[uid] = a
        with open(d / f"{spk}-{chap}.trans.txt", "a") as f:
            f.write(f"{uid} {text}\n")
    (base / "SPEAKERS.TXT").write_text(
        "; LibriSpeech speakers\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "1089 | M | test-clean       | 25.00 | Somebody\n121  | F | test-clean       | 25.00 | Someone\n"
        "237  | F | test-clean       | 25.00 | Another\n"
    )
    return root, audio


def test_librispeech_raw_layout(librispeech_root):
    root, audio = librispeech_root
    for where in (root, root / "LibriSpeech", root / "LibriSpeech" / "test-clean"):
        ds = load_librispeech(where, split="test.clean")
        assert isinstance(ds, LabelledDataset) and len(ds) == 5
    ds = load_librispeech(root, split="test-clean", label="gender")
    by_id = {r["id"]: r for r in ds.metadata()}
    assert set(by_id) == set(audio)
    for spk, chap, utt, text, _ in LS_UTTS:
        r = by_id[f"{spk}-{chap}-{utt:04d}"]
        assert (r["text"], r["speaker_id"], r["chapter_id"]) == (text, spk, chap)
        assert r["gender_name"] == ("male" if spk == 1089 else "female") and r["label"] == r["gender"]
    assert ds.label_names == ["male", "female"]
    # numeric utterance order, audio through load_audio (16-bit flac: within quantisation)
    assert [r["id"] for r in ds.metadata()][:2] == ["121-121726-0000", "121-123852-0003"]
    for i in range(len(ds)):
        it = ds[i]
        assert it["audio"].dtype == np.float32
        np.testing.assert_allclose(it["audio"], audio[it["id"]], atol=1 / 32768 + 1e-7)
    spk = load_librispeech(root, split="test.clean", n=3, shuffle_seed=0)
    assert len(spk) == 3 and spk.label_names == sorted({str(r["speaker_id"]) for r in spk.metadata()})
    assert spk.dataset_id != ds.dataset_id
    assert [r["id"] for r in spk.metadata()] == [
        r["id"] for r in load_librispeech(root, n=3, shuffle_seed=0).metadata()
    ]
    assert len(load_librispeech(root, max_seconds=1.5)) < 5
    with pytest.raises(CorpusError, match="neither LibriSpeech split 'test.other'"):
        load_librispeech(root / "LibriSpeech", split="test.other")


def test_librispeech_hf_save_to_disk(librispeech_root, tmp_path):
    datasets = pytest.importorskip("datasets")
    root, audio = librispeech_root
    files = sorted((root / "LibriSpeech" / "test-clean").glob("*/*/*.flac"))
    ids = [f.stem for f in files]
    texts = {f"{s}-{c}-{u:04d}": t for s, c, u, t, _ in LS_UTTS}
    hf = datasets.Dataset.from_dict(
        {
            "file": [str(f) for f in files],
            "audio": [str(f) for f in files],
            "text": [texts[i] for i in ids],
            "speaker_id": [int(i.split("-")[0]) for i in ids],
            "chapter_id": [int(i.split("-")[1]) for i in ids],
            "id": ids,
        }
    ).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"test.clean": hf}).save_to_disk(str(tmp_path / "hf"))
    ds = load_librispeech(
        tmp_path / "hf", split="test.clean", speakers_file=root / "LibriSpeech" / "SPEAKERS.TXT", label="gender"
    )
    assert [r["id"] for r in ds.metadata()] == ids and [r["text"] for r in ds.metadata()] == [texts[i] for i in ids]
    assert [r["gender_name"] for r in ds.metadata()] == ["male" if i.startswith("1089") else "female" for i in ids]
    for i in range(len(ds)):
        np.testing.assert_allclose(ds[i]["audio"], audio[ds[i]["id"]], atol=1 / 32768 + 1e-7)
    with pytest.raises(CorpusError, match="splits"):
        load_librispeech(tmp_path / "hf", split="train.clean.100")


@pytest.fixture(scope="module")
def common_voice_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    clips = root / "en" / "clips"
    clips.mkdir(parents=True)
    audio = {}
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"]
    for client, fname, sentence, gender, accent, voice, fmt in CV_ROWS:
        a = synthesize(sentence, voice=voice)
        audio[fname] = a
        sf.write(str(clips / fname), resample_poly(a, 3, 1).astype(np.float32) * 0.9, 48000)  # 48 kHz like CV
        lines.append(f"{client}\t{fname}\t{sentence}\t2\t0\ttwenties\t{gender}\t{accent}\ten\t")
    (root / "en" / "test.tsv").write_text("\n".join(lines) + "\n")
    (root / "en" / "dev.tsv").write_text(lines[0] + "\n" + lines[1] + "\n")
    return root, audio


def test_common_voice_raw_layout(common_voice_root):
    root, audio = common_voice_root
    ds = load_common_voice(root, "en", "test", label="speaker")
    assert len(ds) == 4 and ds.label_names == ["c1", "c2", "c3"]
    meta = ds.metadata()
    assert [r["text"] for r in meta] == [row[2] for row in CV_ROWS]  # quotes kept verbatim
    assert [r["accent"] for r in meta] == [row[4] for row in CV_ROWS]
    assert [r["gender"] for r in meta] == [1, 0, -1, 1] and [r["label"] for r in meta] == [0, 1, 2, 0]
    for i in range(len(ds)):
        it = ds[i]
        ref = 0.9 * audio[CV_ROWS[i][1]]
        assert it["audio"].dtype == np.float32 and abs(it["audio"].size - ref.size) <= 2
        m = min(it["audio"].size, ref.size)
        if CV_ROWS[i][6] == "wav":  # 48 kHz 16-bit wav -> 16 kHz: close to the original
            assert np.linalg.norm(it["audio"][:m] - ref[:m]) < 0.05 * np.linalg.norm(ref[:m])
    with pytest.warns(UserWarning, match="1 of 4 items have no gender"):
        g = load_common_voice(root / "en", "en", "test")  # root may be the language folder
    assert g.label_names == ["male", "female"] and [r["label"] for r in g.metadata()] == [1, 0, 1]
    with pytest.warns(UserWarning):
        acc = load_common_voice(root, "en", "test", label="accent")
    assert acc.label_names == ["England English", "United States English"]
    assert len(load_common_voice(root, "en", "validation", label="speaker")) == 1  # validation -> dev.tsv
    assert len(load_common_voice(root, "en", "test", n=2, label="speaker")) == 2
    with pytest.raises(CorpusError, match=r"no de/test.tsv .*languages there: \['en'\]"):
        load_common_voice(root, "de", "test")
    with pytest.raises(ValueError, match="unknown label 'age'; valid: gender, accent, speaker"):
        load_common_voice(root, "en", "test", label="age")


def test_offline_hub_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match=r"cannot be reached: HF_HUB_OFFLINE is set.*save_to_disk"):
        load_librispeech("openslr/librispeech_asr", split="test.clean", n=5)
    with pytest.raises(CorpusError, match="Common Voice on the hub is gated"):
        load_common_voice("mozilla-foundation/common_voice_17_0", "en", "test")


def test_gender_spellings_and_bad_n():
    assert normalize_gender("M") == (0, "male") and normalize_gender("female_feminine") == (1, "female")
    assert normalize_gender("") == (-1, "unknown") and normalize_gender(None) == (-1, "unknown")
    with pytest.raises(ValueError, match="n must be None"):
        load_librispeech("x", n=0)
