"""Small files the methods save and read back (SAEs, probes, tuned lenses, sweep results,
explorer pages): written atomically, read with their sizes and values checked first.

* :func:`atomic_write_text` / :func:`atomic_write_bytes`: temporary file beside the target,
  fsync, ``os.replace``. A crash or a full disk leaves the previous file whole.
* :func:`read_checked_safetensors`: compares every tensor's shape in the file's header with
  the shape its JSON config implies *before* any tensor is read (a config saying
  ``d_sae=4e6`` is refused instead of allocating 6 GB), refuses a file whose declared size is
  mostly holes (a sparse file), then refuses non-float and NaN/inf tensors.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch


class FileCheckError(ValueError):
    """A saved file whose sizes or values contradict what it claims to be."""


@contextlib.contextmanager
def _replaced_atomically(path: str | Path) -> Iterator[str]:
    """Yield a temporary file beside ``path`` to write; then fsync it, give it the umask's
    permissions and ``os.replace`` it over ``path`` (removed instead if the writer raised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is always the old or the new file, never a part."""
    with _replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    import safetensors.torch

    with _replaced_atomically(path) as tmp:
        safetensors.torch.save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            tmp,
            metadata=dict(metadata) if metadata else None,
        )
    return Path(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A file may hold holes where a filesystem compresses; a file whose declared tensors are mostly
# holes is a sparse (crafted or damaged) file that would be read as gigabytes of zeros.
_SPARSE_MIN_BYTES = 64 << 20
_SPARSE_MIN_FRACTION = 1 / 16


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors header (nothing is read beyond it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError or OSError
        raise FileCheckError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is damaged"
        ) from None


def read_checked_safetensors(
    path: str | Path,
    expected: Mapping[str, Sequence[int]],
    what: str,
    optional: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` after checking, in this order: the header names exactly the
    ``expected`` tensors (plus any of ``optional``) with exactly those shapes (the sizes the
    JSON config gave); the file is not mostly holes; every tensor is floating point and finite.
    ``what`` names the file's kind in messages ("SAE", "probe", ...)."""
    from safetensors.torch import load_file

    path = Path(path)
    shapes = header_shapes(path)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected) - set(optional))
    if missing or extra:
        raise FileCheckError(
            f"{path}: this {what} file should hold tensors {sorted(expected)}; missing {missing}, unexpected {extra}"
        )
    for name, want in expected.items():
        if shapes[name] != tuple(int(x) for x in want):
            raise FileCheckError(
                f"{path}: tensor {name!r} has shape {list(shapes[name])} but the {what}'s config says "
                f"{list(want)}; the config and the weights do not belong together (a damaged or edited file)"
            )
    st = path.stat()
    on_disk = getattr(st, "st_blocks", None)
    if on_disk is not None and st.st_size > _SPARSE_MIN_BYTES and on_disk * 512 < st.st_size * _SPARSE_MIN_FRACTION:
        raise FileCheckError(
            f"{path} declares {st.st_size / 1e9:.2f} GB but only {on_disk * 512 / 1e6:.1f} MB are stored on disk "
            f"(a sparse or truncated file); refusing to read it as this {what}'s weights"
        )
    tensors = load_file(str(path))
    check_finite(tensors, f"{path}", what)
    return tensors


def check_finite(tensors: Mapping[str, torch.Tensor], where: str, what: str) -> None:
    """Raise :class:`FileCheckError` naming the first non-float or NaN/inf tensor."""
    for name, t in tensors.items():
        if not torch.is_floating_point(t):
            raise FileCheckError(f"{where}: {what} tensor {name!r} has dtype {t.dtype}; expected floating point")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise FileCheckError(
                f"{where}: {what} tensor {name!r} holds {bad} NaN/inf values of {t.numel()}; the file is corrupt or "
                "was saved after training diverged. Retrain it, or load an earlier checkpoint"
            )


__all__ = [
    "FileCheckError",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_finite",
    "header_shapes",
    "read_checked_safetensors",
]
