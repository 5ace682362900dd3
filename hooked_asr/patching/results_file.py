"""A sweep's results file: JSON lines a sweep appends to as it goes and resumes from.

Line 1 is ``{"config": fingerprint}``: everything that decides the rows (model name and
weights hash, generation settings, intervention, alpha, metrics, reference, positions, token
caps, teacher-forcing prompt options, mean activations' hash). Every later line is one row,
carrying ``item_hash``, the content hash of its item's audio, reference, text and extra fields.

Opening a file for a resume:

* takes a lock (``<file>.lock``, ``fcntl.flock``: released by the kernel when the process
  ends, however it ends), so two sweeps never append to one file;
* refuses a header that differs from this sweep's, naming each differing key, and a row whose
  item id is this sweep's but whose ``item_hash`` is not;
* reads a last line that is cut short (a full disk, a killed run) as absent, warning with the
  file name and line, and refuses a damaged line elsewhere (the file was edited);
* keeps only (component, item) pairs whose every metric row is present, and rewrites the file
  atomically when it dropped anything, so the pairs recomputed are not appended twice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hooked_asr.files import atomic_write_text
from hooked_asr.fingerprint import describe_differences, differences

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, as before
    fcntl = None  # type: ignore[assignment]

_ROW_KEYS = ("component", "item", "metric")


class ResultsFile:
    """An open, locked results file. ``rows``: the complete rows read back; :meth:`append`
    writes new rows; :meth:`close` releases the lock (also a context manager)."""

    def __init__(self, path: str | Path, config: dict[str, Any], metrics: Sequence[str], item_hashes: dict[str, str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        try:
            self.rows = self._read(config, list(metrics), item_hashes)
        except BaseException:
            self.close()
            raise

    def _read(self, config: dict[str, Any], metrics: list[str], item_hashes: dict[str, str]) -> list[dict[str, Any]]:
        header = json.dumps({"config": config})
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_text(self.path, header + "\n")
            return []
        raw = self.path.read_bytes().decode("utf-8", errors="replace").split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        parsed: list[dict[str, Any]] = []
        rewrite = False
        for i, line in enumerate(raw):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                ok = isinstance(obj, dict) and ("config" in obj if i == 0 else all(k in obj for k in _ROW_KEYS))
            except json.JSONDecodeError:
                ok = False
            if ok:
                parsed.append(obj)
            elif i == len(raw) - 1 and i > 0:
                warnings.warn(
                    f"{self.path}: line {i + 1} is cut short or damaged (a full disk or a run killed while "
                    "writing?); its rows are recomputed",
                    UserWarning,
                    stacklevel=4,
                )
                rewrite = True
            else:
                raise ValueError(
                    f"{self.path}: line {i + 1} is not a results row ({line[:60]!r}); the file was damaged or edited. "
                    "Delete it (or that line) and rerun; the sweep recomputes what is missing"
                )
        if not parsed or "config" not in parsed[0]:
            raise ValueError(
                f"{self.path} has no sweep header on line 1; it is not a sweep results file. "
                "Use another results_path (--out) or delete it"
            )
        diff = differences(parsed[0]["config"], config)
        if diff:
            raise ValueError(
                f"{self.path} holds results of a different sweep ({describe_differences(diff)}). Use another results_path "
                "(--out), or delete the file to recompute"
            )
        rows = parsed[1:]
        for r in rows:
            want = item_hashes.get(r["item"])
            if want is not None and r.get("item_hash") != want:
                raise ValueError(
                    f"{self.path}: item {r['item']!r} was computed from other audio or labels (content "
                    f"{str(r.get('item_hash'))[:12]}, now {want[:12]}). Give the new input another id, or use another "
                    "results_path (--out), or delete the file to recompute"
                )
        complete = _complete_pairs(rows, metrics)
        kept = [r for r in rows if (r["component"], r["item"]) in complete]
        seen: set[tuple[str, str, str]] = set()
        unique = []
        for r in kept:  # two runs without a lock (older versions) may have written a pair twice
            key = (r["component"], r["item"], r["metric"])
            if key not in seen:
                seen.add(key)
                unique.append(r)
        if rewrite or len(unique) != len(rows):
            atomic_write_text(self.path, header + "\n" + "".join(json.dumps(r) + "\n" for r in unique))
        return unique

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows (one ``write`` then ``fsync``: a crash leaves at most a cut last line)."""
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _complete_pairs(rows: list[dict[str, Any]], metrics: list[str]) -> set[tuple[str, str]]:
    have: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        have.setdefault((r["component"], r["item"]), set()).add(r["metric"])
    return {pair for pair, ms in have.items() if set(metrics) <= ms}


def _lock(path: Path) -> Any:
    if fcntl is None:
        return None
    f = open(path.with_name(path.name + ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(
            f"another sweep is writing {path} (it holds {path.name}.lock); wait for it to finish, or use another "
            "results_path (--out)"
        ) from None
    return f


__all__ = ["ResultsFile"]
