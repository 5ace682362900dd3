"""TransformerLens token helpers (to_tokens, to_str_tokens, to_string, to_single_token) on every model:
``language=`` / ``task=`` and the default on multilingual checkpoints, against Hugging Face's tokenizer."""

from __future__ import annotations

import pytest
import torch


def _hf_prefix(language: str, task: str) -> list[int]:
    from transformers import WhisperTokenizerFast

    from hooked_asr.loading.registry import weights_dir

    path = weights_dir() / "whisper-base" / "tokenizer.json"
    tok = WhisperTokenizerFast(tokenizer_file=str(path), language=language, task=task)
    return list(tok.prefix_tokens)


def test_multilingual_token_helpers_take_language_and_task(whisper_base):
    m = whisper_base
    # the default: English transcription, as Whisper's own tokenizer (and ours) default to
    assert m.to_tokens(" he was")[0, :4].tolist() == _hf_prefix("english", "transcribe")
    strs = m.to_str_tokens(" he was")
    assert strs[:4] == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    assert "".join(strs[4:]) == " he was"
    fr = m.to_tokens(" il était", language="fr", task="translate")
    assert fr[0, :4].tolist() == _hf_prefix("french", "translate")
    assert m.to_str_tokens(" il était", language="fr", task="translate")[1:3] == ["<|fr|>", "<|translate|>"]
    assert m.to_string(fr[0, 4:], language="fr") == " il était"
    assert m.to_single_token(" was", language="de") == m.tokenizer.encode(" was")[0]
    for fn in (
        lambda: m.to_tokens(" x", language="xx"),
        lambda: m.to_str_tokens(" x", language="xx"),
        lambda: m.to_string([1, 2], language="xx"),
        lambda: m.to_single_token(" x", language="xx"),
    ):
        with pytest.raises(ValueError, match="unknown language 'xx'"):
            fn()
    with pytest.raises(ValueError, match="task must be"):
        m.to_tokens(" x", task="summarise")


def test_english_only_token_helpers_refuse_other_languages(whisper_tiny_en):
    m = whisper_tiny_en
    assert torch.equal(m.to_tokens(" he was"), m.to_tokens(" he was", language="en"))
    assert m.to_str_tokens(" he was")[:2] == ["<|startoftranscript|>", "<|notimestamps|>"]
    with pytest.raises(ValueError, match="English-only"):
        m.to_str_tokens(" he was", language="fr")
    with pytest.raises(ValueError, match="cannot translate"):
        m.to_single_token(" was", task="translate")
