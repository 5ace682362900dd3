"""openai-whisper's own model, filled from our converted Hugging Face safetensors (no pickle, no download).

openai-whisper (``pip install openai-whisper``, in the ``test`` extra) is the canonical implementation of
every ``transcribe`` option; the differential tests and ``scripts/decoding_matrix.py`` run it beside our
model on the same weights. Only the names differ between the two layouts::

    HF  model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj   openai  encoder.blocks.{i}.attn.{query,key,value,out}
        ....self_attn_layer_norm / final_layer_norm                 ....attn_ln / mlp_ln
        ....fc1 / fc2                                               ....mlp.0 / mlp.2
        model.decoder.layers.{i}.encoder_attn(_layer_norm)          decoder.blocks.{i}.cross_attn(_ln)
        model.encoder.layer_norm / model.decoder.layer_norm         encoder.ln_post / decoder.ln
        model.{encoder,decoder}.embed_positions.weight              {encoder,decoder}.positional_embedding
        model.decoder.embed_tokens.weight                           decoder.token_embedding.weight

Both keep ``k`` without a bias and tie the unembedding to the token embedding, so the mapping is
one-to-one (asserted: every openai tensor is filled, every HF tensor is used).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

_RENAMES = [
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.", r"\1.blocks.\2."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.fc1\.", ".mlp.0."),
    (r"\.fc2\.", ".mlp.2."),
    (r"\.q_proj\.", ".query."),
    (r"\.k_proj\.", ".key."),
    (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"^model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"^model\.(encoder|decoder)\.embed_positions\.weight$", r"\1.positional_embedding"),
    (r"^model\.decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"^model\.encoder\.conv", "encoder.conv"),
]


def openai_name(hf_name: str) -> str | None:
    """The openai-whisper name of a Hugging Face Whisper tensor (``None``: tied ``proj_out``)."""
    if hf_name == "proj_out.weight":
        return None
    name = hf_name
    for pattern, repl in _RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def openai_whisper_from_hf_dir(folder: str | Path) -> Any:
    """``whisper.model.Whisper`` with the weights of a Hugging Face Whisper folder (config.json +
    model.safetensors, e.g. ``weights/whisper-tiny.en``), fp32, on the CPU, its alignment heads set
    from the folder's generation config."""
    import json

    import numpy as np
    from safetensors.torch import load_file
    from whisper.model import ModelDimensions, Whisper

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    dims = ModelDimensions(
        n_mels=cfg["num_mel_bins"],
        n_audio_ctx=cfg["max_source_positions"],
        n_audio_state=cfg["d_model"],
        n_audio_head=cfg["encoder_attention_heads"],
        n_audio_layer=cfg["encoder_layers"],
        n_vocab=cfg["vocab_size"],
        n_text_ctx=cfg["max_target_positions"],
        n_text_state=cfg["d_model"],
        n_text_head=cfg["decoder_attention_heads"],
        n_text_layer=cfg["decoder_layers"],
    )
    model = Whisper(dims)
    mapped = {}
    for k, v in state.items():
        name = openai_name(k)
        if name is not None:
            mapped[name] = v.float()
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(mapped)), sorted(set(mapped) - set(own))
    if missing or extra:
        raise ValueError(f"HF -> openai-whisper mapping: missing {missing[:5]}, unmapped {extra[:5]}")
    model.load_state_dict(mapped, strict=True)
    gen_path = folder / "generation_config.json"
    heads = json.loads(gen_path.read_text()).get("alignment_heads") if gen_path.exists() else None
    if heads:
        mask = np.zeros((dims.n_text_layer, dims.n_text_head), dtype=bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", torch.from_numpy(mask).to_sparse(), persistent=False)
    return model.eval()


__all__ = ["openai_name", "openai_whisper_from_hf_dir"]


def segment_tokens_of_openai(result: dict[str, Any]) -> list[tuple[int, list[int]]]:
    """``[(seek, tokens), ...]`` of openai-whisper's kept segments (it keeps cleared ones with no
    tokens; we drop them, as faster-whisper does)."""
    return [(int(s["seek"]), list(s["tokens"])) for s in result["segments"] if s["tokens"]]


# transcribe options openai-whisper does not have (ours choose among methods; "openai" is its method)
_OURS_ONLY = ("alignment_heads", "word_unit")


def transcribe_both(model: Any, reference: Any, audio: Any, **options: Any) -> tuple[Any, dict[str, Any]]:
    """Our ``model.transcribe(audio, **options)`` and openai-whisper's ``transcribe`` of ``reference``
    (from :func:`openai_whisper_from_hf_dir`) with the same options, fp32, no progress output.
    ``language`` defaults to ``"en"`` on both (openai-whisper's tokenizer needs one for .en models)."""
    import whisper

    options = dict(options)
    ours = model.transcribe(audio, progress=False, **options)
    for name in _OURS_ONLY:
        options.pop(name, None)
    options.setdefault("language", "en")
    theirs = whisper.transcribe(reference, audio, fp16=False, verbose=None, **options)
    return ours, theirs


__all__ += ["segment_tokens_of_openai", "transcribe_both"]
