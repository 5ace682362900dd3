"""Loaders for real speech corpora: LibriSpeech and Common Voice.

Each returns a :class:`~hooked_asr.datasets.labelled.LabelledDataset` whose items are
``{"audio": float32 16 kHz, "label", "label_name", "text", "id", "speaker", "gender",
...}``; audio is read lazily, item by item, through :func:`hooked_asr.audio.load_audio`
(validated, mixed to mono, resampled to 16 kHz). ``label`` is the attribute chosen with
``label=`` (``"speaker"``, ``"gender"``: 0 male / 1 female as in
:func:`~hooked_asr.datasets.labelled.gender_dataset`, or Common Voice's ``"accent"``);
``gender`` is always present (-1 where unknown).

``path_or_name`` may be:

- the raw on-disk corpus: LibriSpeech ``<root>/<split>/<speaker>/<chapter>/
  <speaker>-<chapter>-<utt>.flac`` with ``<speaker>-<chapter>.trans.txt`` (``root`` may be
  the folder holding ``LibriSpeech/``, ``LibriSpeech/`` itself, or the split folder;
  genders come from ``SPEAKERS.TXT`` when present); Common Voice
  ``<root>/<lang>/{train,dev,test,...}.tsv`` with ``<root>/<lang>/clips/*.mp3|wav``
  (``root`` may be the language folder itself);
- a folder written by Hugging Face ``datasets``' ``save_to_disk``, or any local folder
  ``datasets.load_dataset`` reads;
- a Hugging Face hub id (``"openslr/librispeech_asr"``), which needs network: offline
  this fails at once with what to do instead.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hooked_asr.datasets.labelled._build import params_str
from hooked_asr.datasets.labelled.dataset import LabelledDataset, digest

AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".opus")
LIBRISPEECH_SPLITS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)


class CorpusError(RuntimeError):
    """A corpus cannot be found or read (offline hub access included)."""


# ---- shared ----------------------------------------------------------------------------
def normalize_gender(value: Any) -> tuple[int, str]:
    """``(0, "male")``, ``(1, "female")`` or ``(-1, "unknown")`` from the spellings corpora
    use (``M``/``F``, ``male``/``female``, Common Voice's ``male_masculine``, ...)."""
    v = str(value or "").strip().lower()
    if v in ("m", "male", "male_masculine", "man", "masculine"):
        return 0, "male"
    if v in ("f", "female", "female_feminine", "woman", "feminine"):
        return 1, "female"
    return -1, "unknown"


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False, f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"cannot connect to {host} ({e})"


def _offline_message(name: str, how: str, why: str) -> str:
    return (
        f"{name!r} is not a local folder, so it would be downloaded from the Hugging Face hub, "
        f"which cannot be reached: {why}. On a machine with network run `{how}` and pass that folder "
        "here, or pass the root of the raw corpus on disk (see hooked_asr.datasets.corpora's docstring)."
    )


def _load_hf(path_or_name: str | Path, split: str, config: str | None, how: str) -> Any:
    """A ``datasets.Dataset``: ``load_from_disk`` folder, local ``load_dataset`` folder, or hub id."""
    try:
        import datasets
    except ImportError:
        raise CorpusError("reading Hugging Face datasets needs the `datasets` package: pip install datasets") from None
    p = Path(path_or_name)
    if p.exists():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            ds = datasets.load_from_disk(str(p))
        else:
            ds = datasets.load_dataset(str(p), config, split=split)
    else:
        ok, why = _hub_reachable()
        if not ok:
            raise CorpusError(_offline_message(str(path_or_name), how, why))
        try:
            ds = datasets.load_dataset(str(path_or_name), config, split=split)
        except Exception as e:  # network, gated dataset, unknown split...
            raise CorpusError(
                f"datasets.load_dataset({str(path_or_name)!r}, {config!r}, split={split!r}) failed: "
                f"{type(e).__name__}: {e}"
            ) from e
    if isinstance(ds, datasets.DatasetDict):
        keys = [split, split.replace(".", "_"), split.replace("-", "."), split.replace(".", "-")]
        key = next((k for k in keys if k in ds), None)
        if key is None:
            raise CorpusError(f"{path_or_name} has splits {sorted(ds)}, not {split!r}")
        ds = ds[key]
    if "audio" in ds.column_names:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))  # decode ourselves (no torchcodec needed)
    return ds


def _hf_audio(ds: Any, i: int) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        import soundfile as sf

        from hooked_asr.audio import load_audio

        a = ds[i]["audio"]
        if isinstance(a, Mapping) and "array" in a:  # already decoded
            return load_audio(
                np.asarray(a["array"], dtype=np.float32),
                sampling_rate=int(a["sampling_rate"]),
                allow_long=True,
                allow_silence=True,
            )
        if a.get("bytes"):
            data, sr = sf.read(io.BytesIO(a["bytes"]), dtype="float32", always_2d=True)
            return load_audio(data, sampling_rate=sr, allow_long=True, allow_silence=True)
        return load_audio(a["path"], allow_long=True, allow_silence=True)

    return read


def _hf_duration(ds: Any, i: int) -> float | None:
    import soundfile as sf

    a = ds[i].get("audio")
    try:
        if isinstance(a, Mapping) and a.get("bytes"):
            return sf.info(io.BytesIO(a["bytes"])).duration
        if isinstance(a, Mapping) and a.get("path") and Path(a["path"]).exists():
            return sf.info(a["path"]).duration
    except Exception:
        return None
    return None


def _duration(path: Path) -> float | None:
    import soundfile as sf

    try:
        return sf.info(str(path)).duration
    except Exception:
        return None


def _select(rows: list[dict[str, Any]], n: int | None, shuffle_seed: int | None) -> list[dict[str, Any]]:
    if shuffle_seed is not None:
        rows = [rows[int(i)] for i in np.random.default_rng(shuffle_seed).permutation(len(rows))]
    return rows if n is None else rows[:n]


def _labelled(
    rows: list[dict[str, Any]],
    audio: list[Any],
    label: str,
    valid: Iterable[str],
    drop_unlabelled: bool,
    name: str,
    params: Mapping[str, Any],
) -> LabelledDataset:
    valid = list(valid)
    if label not in valid:
        raise ValueError(f"unknown label {label!r}; valid: {', '.join(valid)}")
    if label == "gender":
        names = ["male", "female"]
        values = [r["gender"] for r in rows]
    else:
        key = "speaker" if label == "speaker" else label
        names = sorted({str(r[key]) for r in rows if str(r[key])})
        index = {s: k for k, s in enumerate(names)}
        values = [index.get(str(r[key]), -1) for r in rows]
    keep = [i for i, v in enumerate(values) if v >= 0 or not drop_unlabelled]
    if label == "gender" and rows and not any(v >= 0 for v in values):
        raise CorpusError(
            f"no item has a known gender in this {name} selection "
            "(LibriSpeech: SPEAKERS.TXT next to the split folders, or speakers_file=...)"
        )
    records = []
    for i in keep:
        r = dict(rows[i])
        r["label"] = int(values[i])
        r["label_name"] = names[values[i]] if values[i] >= 0 else "unknown"
        records.append(r)
    if len(keep) < len(rows):
        warnings.warn(f"{len(rows) - len(keep)} of {len(rows)} items have no {label} and were dropped", stacklevel=3)
    did = f"{name}({params_str(params)})@{digest(records)}"
    return LabelledDataset(records, [audio[i] for i in keep], names, did)


def _check_n(n: int | None) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be None (all) or an integer >= 1, got {n!r}")
    return None if n is None else int(n)


# ---- LibriSpeech -----------------------------------------------------------------------
def _librispeech_split_dir(root: Path, split: str) -> Path | None:
    if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
        return None  # a Hugging Face save_to_disk folder
    names = {split, split.replace(".", "-"), split.replace("validation", "dev").replace(".", "-")}
    for base in (root, root / "LibriSpeech"):
        for nm in names:
            if (base / nm).is_dir() and any((base / nm).glob("*/*/*.trans.txt")):
                return base / nm
    if any(root.glob("*/*/*.trans.txt")):  # root is the split folder itself
        return root
    return None


def read_speakers_txt(path: str | Path) -> dict[int, str]:
    """LibriSpeech ``SPEAKERS.TXT``: speaker id -> ``"M"``/``"F"`` (``;`` lines are comments)."""
    out: dict[int, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        parts = [p.strip() for p in line.split("|")]
        if parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


def _librispeech_raw(split_dir: Path, speakers: dict[int, str]) -> tuple[list[dict[str, Any]], list[Path]]:
    rows, paths = [], []
    trans_files = sorted(
        split_dir.glob("*/*/*.trans.txt"),
        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"[-.]", p.name)],
    )
    if not trans_files:
        raise CorpusError(f"no <speaker>/<chapter>/*.trans.txt under {split_dir}")
    for tf in trans_files:
        for line in tf.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = next(
                (tf.parent / (utt_id + ext) for ext in AUDIO_EXTS if (tf.parent / (utt_id + ext)).exists()), None
            )
            if audio is None:
                raise CorpusError(f"{tf} lists {utt_id} but no {utt_id}.flac (or .wav) is beside it")
            spk, chap, _ = (utt_id.split("-") + ["", ""])[:3]
            g, gname = normalize_gender(speakers.get(int(spk)) if spk.isdigit() else None)
            rows.append(
                {
                    "text": text.strip(),
                    "id": utt_id,
                    "speaker": spk,
                    "speaker_id": int(spk) if spk.isdigit() else -1,
                    "chapter_id": int(chap) if chap.isdigit() else -1,
                    "gender": g,
                    "gender_name": gname,
                }
            )
            paths.append(audio)
    return rows, paths


def load_librispeech(
    path_or_name: str | Path = "openslr/librispeech_asr",
    split: str = "test.clean",
    n: int | None = None,
    label: str = "speaker",
    shuffle_seed: int | None = None,
    max_seconds: float | None = 30.0,
    speakers_file: str | Path | None = None,
    drop_unlabelled: bool = True,
) -> LabelledDataset:
    """LibriSpeech utterances with their transcripts (``text``, upper case as distributed).

    ``split``: ``"test.clean"`` (hub style) or ``"test-clean"`` (folder style), likewise
    ``dev``/``validation``, ``other``, ``train.clean.100``... ``n``: the first ``n`` (after a
    seeded shuffle if ``shuffle_seed``). ``max_seconds``: longer utterances are skipped
    (Whisper reads 30 s). ``label``: ``"speaker"`` or ``"gender"`` (needs SPEAKERS.TXT or
    ``speakers_file``).
    """
    n = _check_n(n)
    params = {
        "source": str(path_or_name),
        "split": split,
        "n": n,
        "label": label,
        "shuffle_seed": shuffle_seed,
        "max_seconds": max_seconds,
    }
    if label not in ("speaker", "gender"):
        raise ValueError(f"unknown label {label!r}; valid: speaker, gender")
    root = Path(path_or_name)
    speakers: dict[int, str] = {}
    if speakers_file is not None:
        speakers = read_speakers_txt(speakers_file)
    split_dir = _librispeech_split_dir(root, split) if root.is_dir() else None
    if split_dir is not None:
        if not speakers:
            for cand in (split_dir.parent / "SPEAKERS.TXT", split_dir.parent.parent / "SPEAKERS.TXT"):
                if cand.exists():
                    speakers = read_speakers_txt(cand)
                    break
        rows, paths = _librispeech_raw(split_dir, speakers)
        order = _select(list(range(len(rows))), None, shuffle_seed)
        sel_rows, sel_audio = [], []
        for i in order:
            if n is not None and len(sel_rows) >= n:
                break
            if max_seconds is not None and (_duration(paths[i]) or 0.0) > max_seconds:
                continue
            sel_rows.append(rows[i])
            sel_audio.append(str(paths[i]))
        return _labelled(sel_rows, sel_audio, label, ("speaker", "gender"), drop_unlabelled, "librispeech", params)
    if root.is_dir() and not any(root.iterdir()):
        raise CorpusError(f"{root} is empty")
    if (
        root.exists()
        and not (root / "dataset_dict.json").exists()
        and not (root / "state.json").exists()
        and not any(root.glob("**/*.parquet"))
        and not any(root.glob("**/*.arrow"))
    ):
        raise CorpusError(
            f"{root} holds neither LibriSpeech split {split!r} (<split>/<speaker>/<chapter>/*.trans.txt; "
            f"folders there: {sorted(p.name for p in root.iterdir() if p.is_dir())[:10]}) nor a "
            "Hugging Face dataset"
        )
    ds = _load_hf(
        path_or_name,
        split,
        None,
        f"datasets.load_dataset({str(path_or_name)!r}, split={split!r}).save_to_disk('librispeech_{split}')",
    )
    rows, audio = [], []
    for i in _select(list(range(len(ds))), None, shuffle_seed):
        if n is not None and len(rows) >= n:
            break
        r = {k: v for k, v in ds[i].items() if k != "audio"}
        if max_seconds is not None and (_hf_duration(ds, i) or 0.0) > max_seconds:
            continue
        spk = r.get("speaker_id", -1)
        g, gname = normalize_gender(r.get("gender") or speakers.get(int(spk) if str(spk).lstrip("-").isdigit() else -1))
        rows.append(
            {
                "text": str(r.get("text", "")),
                "id": str(r.get("id", i)),
                "speaker": str(spk),
                "speaker_id": int(spk) if str(spk).lstrip("-").isdigit() else -1,
                "chapter_id": int(r.get("chapter_id", -1) or -1),
                "gender": g,
                "gender_name": gname,
            }
        )
        audio.append(_hf_audio(ds, i))
    return _labelled(rows, audio, label, ("speaker", "gender"), drop_unlabelled, "librispeech", params)


# ---- Common Voice ----------------------------------------------------------------------
CV_SPLITS = ("train", "dev", "test", "validated", "invalidated", "other")


def _cv_row(r: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    g, gname = normalize_gender(r.get("gender"))
    accent = r.get("accents", r.get("accent", "")) or ""
    client = str(r.get("client_id", "") or "")
    path = str(r.get("path", "") or "")
    return {
        "text": str(r.get("sentence", "") or ""),
        "id": Path(path).stem or fallback_id,
        "speaker": client,
        "gender": g,
        "gender_name": gname,
        "accent": str(accent),
        "age": str(r.get("age", "") or ""),
        "locale": str(r.get("locale", "") or ""),
    }


def load_common_voice(
    path_or_name: str | Path,
    language: str = "en",
    split: str = "test",
    n: int | None = None,
    label: str = "gender",
    shuffle_seed: int | None = None,
    max_seconds: float | None = 30.0,
    drop_unlabelled: bool = True,
) -> LabelledDataset:
    """Common Voice clips with their sentences, speaker (``client_id``), gender, accent, age.

    ``split``: ``train``/``dev``/``test`` (``validation`` is read as ``dev`` on disk).
    ``label``: ``"gender"`` (default), ``"accent"`` or ``"speaker"``; with
    ``drop_unlabelled`` items without that attribute are dropped (Common Voice leaves many
    blank). ``max_seconds`` skips longer clips (checked from the file header).
    """
    n = _check_n(n)
    params = {
        "source": str(path_or_name),
        "language": language,
        "split": split,
        "n": n,
        "label": label,
        "shuffle_seed": shuffle_seed,
        "max_seconds": max_seconds,
    }
    if label not in ("gender", "accent", "speaker"):
        raise ValueError(f"unknown label {label!r}; valid: gender, accent, speaker")
    root = Path(path_or_name)
    lang_dir = None
    if root.is_dir():
        disk_split = "dev" if split in ("validation", "valid") else split
        for cand in (root / language, root):
            if (cand / f"{disk_split}.tsv").exists():
                lang_dir = cand
                break
        if lang_dir is None:
            tsvs = sorted(p.relative_to(root).as_posix() for p in list(root.glob("*.tsv")) + list(root.glob("*/*.tsv")))
            if tsvs or not (root / "dataset_dict.json").exists() and not (root / "state.json").exists():
                langs = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
                raise CorpusError(
                    f"no {language}/{disk_split}.tsv under {root} (languages there: {langs or 'none'}; "
                    f"tsv files: {tsvs[:10] or 'none'})"
                )
    if lang_dir is not None:
        with open(lang_dir / f"{disk_split}.tsv", encoding="utf-8", newline="") as f:
            table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        rows, audio = [], []
        for i in _select(list(range(len(table))), None, shuffle_seed):
            if n is not None and len(rows) >= n:
                break
            r = table[i]
            clip = lang_dir / "clips" / r.get("path", "")
            if not clip.is_file():
                raise CorpusError(
                    f"{lang_dir / (disk_split + '.tsv')} row {i + 1} names {r.get('path')!r}, "
                    f"not found in {lang_dir / 'clips'}"
                )
            if max_seconds is not None and (_duration(clip) or 0.0) > max_seconds:
                continue
            rows.append(_cv_row(r, str(i)))
            audio.append(str(clip))
        return _labelled(rows, audio, label, ("gender", "accent", "speaker"), drop_unlabelled, "common_voice", params)
    ds = _load_hf(
        path_or_name,
        split,
        language,
        f"datasets.load_dataset({str(path_or_name)!r}, {language!r}, split={split!r})"
        f".save_to_disk('cv_{language}_{split}')' (Common Voice on the hub is gated: accept its terms and "
        "log in first; or download the tarball from commonvoice.mozilla.org",
    )
    rows, audio = [], []
    for i in _select(list(range(len(ds))), None, shuffle_seed):
        if n is not None and len(rows) >= n:
            break
        if max_seconds is not None and (_hf_duration(ds, i) or 0.0) > max_seconds:
            continue
        r = {k: v for k, v in ds[i].items() if k != "audio"}
        rows.append(_cv_row(r, str(i)))
        audio.append(_hf_audio(ds, i))
    return _labelled(rows, audio, label, ("gender", "accent", "speaker"), drop_unlabelled, "common_voice", params)


__all__ = ["CorpusError", "load_common_voice", "load_librispeech", "normalize_gender", "read_speakers_txt"]
