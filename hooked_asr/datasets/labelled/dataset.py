"""The labelled dataset every builder returns, its content digest and its folder format.

A :class:`LabelledDataset` is a ``Sequence`` of ``{"audio", "label", "label_name",
...metadata}`` dicts; ``dataset_id`` changes whenever the content (metadata or audio
bytes) does, which is what the resumable activation store keys on.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hooked_asr.audio import SAMPLE_RATE

MANIFEST = "manifest.json"

AudioSource = np.ndarray | str | Path | Callable[[], np.ndarray]


def progress_bar(it: Iterable, enabled: bool, desc: str, total: int | None = None) -> Iterable:
    """``it`` under a tqdm bar when ``enabled`` (tqdm is imported only then)."""
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)


def digest(obj: Any, audio: Sequence[np.ndarray] = ()) -> str:
    """12 hex digits of SHA-1 over ``obj`` as sorted JSON, then each clip's float32 bytes."""
    h = hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode())
    for a in audio:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


class LabelledDataset(Sequence):
    """A sequence of ``{"audio", <label_key>, "label_name", ...metadata}`` dicts.

    ``records[i]`` is item ``i``'s metadata (JSON-able scalars: int, float, str, bool);
    ``audio[i]`` is its audio: a float32 array at 16 kHz, a file path (read with
    :func:`hooked_asr.audio.load_audio` when the item is accessed), or a zero-argument
    callable (lazy synthesis). ``label_names[k]`` names label value ``k``.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        audio: Sequence[AudioSource],
        label_names: Sequence[str],
        dataset_id: str | None = None,
        label_key: str = "label",
        allow_silence: bool = True,
    ):
        if len(records) != len(audio):
            raise ValueError(f"{len(records)} records but {len(audio)} audio entries")
        self.records = [dict(r) for r in records]
        for i, r in enumerate(self.records):
            if "audio" in r:
                raise ValueError(f"record {i} has an 'audio' key; pass audio separately")
            if label_key not in r:
                raise ValueError(f"record {i} lacks the label key {label_key!r}")
        self._audio = list(audio)
        self.label_names = list(label_names)
        self.label_key = label_key
        self.allow_silence = allow_silence
        self.dataset_id = dataset_id or f"LabelledDataset[{len(self.records)}]@{digest(self.records)}"

    @classmethod
    def from_items(
        cls,
        items: Iterable[Mapping[str, Any]],
        label_names: Sequence[str] | None = None,
        dataset_id: str | None = None,
        label_key: str = "label",
    ) -> LabelledDataset:
        """From dicts that each carry ``audio``; ``label_names`` defaults to ``str(k)`` per label value."""
        items = list(items)
        recs = [{k: v for k, v in it.items() if k != "audio"} for it in items]
        audio = [it["audio"] for it in items]
        if label_names is None:
            n = max((int(r[label_key]) for r in recs), default=-1) + 1
            label_names = [str(k) for k in range(n)]
        return cls(recs, audio, label_names, dataset_id, label_key)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, i: int) -> np.ndarray:
        src = self._audio[i]
        if callable(src):
            src = src()
        if isinstance(src, (str, Path)):
            from hooked_asr.audio import load_audio

            return load_audio(src, allow_long=True, allow_silence=self.allow_silence)
        return np.asarray(src, dtype=np.float32)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i = i % len(self)
        return {"audio": self._load(i), **self.records[i]}

    def subset(self, indices: Iterable[int]) -> LabelledDataset:
        """The items at ``indices`` (their ids fold into ``dataset_id``)."""
        idx = [int(i) for i in indices]
        sub_id = f"{self.dataset_id}[{digest(idx)}]"
        return LabelledDataset(
            [self.records[i] for i in idx],
            [self._audio[i] for i in idx],
            self.label_names,
            sub_id,
            self.label_key,
            self.allow_silence,
        )

    def labels(self) -> np.ndarray:
        """``[len]`` int64 array of the ``label_key`` values."""
        return np.array([r[self.label_key] for r in self.records], dtype=np.int64)

    def metadata(self) -> list[dict[str, Any]]:
        """Every item's metadata (no audio), as copies."""
        return [dict(r) for r in self.records]

    def column(self, key: str) -> list[Any]:
        return [r.get(key) for r in self.records]

    def class_counts(self) -> dict[str, int]:
        labs = self.labels()
        return {name: int((labs == k).sum()) for k, name in enumerate(self.label_names)}

    def materialize(self, progress: bool = False) -> LabelledDataset:
        """Load every item's audio into memory (returns ``self``)."""
        for i in progress_bar(range(len(self)), progress, "loading audio"):
            if not isinstance(self._audio[i], np.ndarray):
                self._audio[i] = self._load(i)
        return self

    def __repr__(self) -> str:
        return f"LabelledDataset({len(self)} items, {self.label_key}: {self.class_counts()}, id={self.dataset_id!r})"

    # -- disk ----------------------------------------------------------------------------
    def save(self, folder: str | Path, progress: bool = False) -> Path:
        """Write ``clips/NNNNN.wav`` (float32 wav: bit-exact round trip), ``manifest.json``
        (id, label names, label key, every record with its file) and ``metadata.csv``."""
        import soundfile as sf

        folder = Path(folder)
        (folder / "clips").mkdir(parents=True, exist_ok=True)
        items = []
        for i in progress_bar(range(len(self)), progress, "saving"):
            rel = f"clips/{i:05d}.wav"
            sf.write(str(folder / rel), self._load(i), SAMPLE_RATE, subtype="FLOAT")
            items.append({**self.records[i], "file": rel})
        manifest = {
            "format": "hooked_asr.LabelledDataset/1",
            "dataset_id": self.dataset_id,
            "label_key": self.label_key,
            "label_names": self.label_names,
            "sample_rate": SAMPLE_RATE,
            "items": items,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        keys: list[str] = []
        for r in items:
            keys += [k for k in r if k not in keys]
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(items)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LabelledDataset:
        """Read a folder written by :meth:`save`; audio is read lazily, item by item."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: not a folder written by LabelledDataset.save")
        m = json.loads(path.read_text())
        records, audio = [], []
        for r in m["items"]:
            r = dict(r)
            audio.append(folder / r.pop("file"))
            records.append(r)
        return cls(records, audio, m["label_names"], m["dataset_id"], m.get("label_key", "label"))


__all__ = ["AudioSource", "LabelledDataset", "digest", "progress_bar"]
