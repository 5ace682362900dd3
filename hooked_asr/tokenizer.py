"""Tokenizers, offline: Whisper's from a ``tokenizer.json``, and Qwen2-Audio's adapter.

The special tokens are read by name from the file. Text is encoded as openai-whisper's tiktoken
encodes it: the file's pre-tokens (GPT-2's regex), each merged by tiktoken's rule, "join the adjacent
pair whose join has the lowest rank (id)". The merge list of the multilingual tokenizer.json files
(Hugging Face's conversion) cannot reach some tokens, so Hugging Face's BPE alone splits words
tiktoken keeps whole (" trains": [220, 17227, 1292] against openai's [16329]), and a prompt
would reach the decoder as other tokens than openai-whisper gives it. The tokenizer.json files shipped with
the CTranslate2 tiny.en and base checkpoints lack timestamp tokens; Whisper's timestamp
ids always follow ``<|notimestamps|>`` (``<|0.00|>`` = notimestamps + 1, in 0.02 s
steps up to ``<|30.00|>``), so they are derived and decoded here.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

from hooked_asr.audio import N_TIMESTAMPS, TIME_PRECISION


class WhisperTokenizer:
    def __init__(self, tokenizer: Any, added_tokens: dict[str, int]):
        self._tok = tokenizer  # a tokenizers.Tokenizer
        self._ranks: dict[str, int] | None = None  # byte-level token string -> id (= tiktoken's rank)
        self._merged: dict[str, list[int]] = {}
        self.special = dict(added_tokens)
        self.id_to_special = {i: t for t, i in self.special.items()}
        self.eot = self.special["<|endoftext|>"]
        self.sot = self.special["<|startoftranscript|>"]
        self.no_timestamps = self.special.get("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1 if self.no_timestamps is not None else None
        self.transcribe = self.special.get("<|transcribe|>")
        self.translate = self.special.get("<|translate|>")
        self.no_speech = self.special.get("<|nospeech|>", self.special.get("<|nocaptions|>"))
        lo, hi = self.sot, self.translate if self.translate is not None else self.sot
        self.languages = {t[2:-2]: i for t, i in self.special.items() if lo < i < hi}

    @classmethod
    def from_file(cls, path: str | Path) -> "WhisperTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: a Whisper tokenizer.json is needed to turn tokens into text")
        tok = Tokenizer.from_file(str(path))
        # The added tokens from the parsed tokenizer itself: parsing the 2 MB JSON a second time
        # was half of this function's time.
        added = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
        if "<|startoftranscript|>" not in added:
            raise ValueError(f"{path} is not a Whisper tokenizer (no <|startoftranscript|> token)")
        return cls(tok, added)

    @classmethod
    def from_hf(cls, hf_tokenizer: Any) -> "WhisperTokenizer":
        """From a ``transformers`` Whisper tokenizer (fast or slow) or processor."""
        tok = getattr(hf_tokenizer, "tokenizer", hf_tokenizer)
        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
        if backend is None:
            raise TypeError(f"cannot use {type(tok).__name__} as a Whisper tokenizer: no fast backend")
        added = {t.content: i for i, t in tok.added_tokens_decoder.items()}
        return cls(backend, added)

    @property
    def is_multilingual(self) -> bool:
        # English-only vocabularies (*.en) keep GPT-2's <|endoftext|> at 50256 and, in some
        # shipped tokenizer.json files, list language tokens they never use.
        return self.eot >= 50257

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def language_token(self, code: str) -> int:
        if code not in self.languages:
            raise ValueError(f"unknown language {code!r}; valid codes: {', '.join(sorted(self.languages))}")
        return self.languages[code]

    def sot_sequence(
        self, language: str | None = None, task: str = "transcribe", timestamps: bool = False
    ) -> list[int]:
        """``[sot]`` (+ ``[language, task]`` when multilingual) (+ ``notimestamps`` unless ``timestamps``)."""
        seq = [self.sot]
        if self.is_multilingual:
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            seq += [self.language_token(language or "en"), self.transcribe if task == "transcribe" else self.translate]
        if not timestamps and self.no_timestamps is not None:
            seq.append(self.no_timestamps)
        return seq

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Ids of ``text``. ``special=False`` reads special-token text such as ``"<|endoftext|>"``
        as the characters it is (what a prompt typed by a user must be), not as the special token."""
        if special:
            return self._ranked(self._tok.encode(text, add_special_tokens=False))
        before = self._tok.encode_special_tokens
        self._tok.encode_special_tokens = True  # tokenizers' switch: added tokens are split as plain text
        try:
            return self._ranked(self._tok.encode(text, add_special_tokens=False))
        finally:
            self._tok.encode_special_tokens = before

    def _ranked(self, encoding: Any) -> list[int]:
        """Re-merge each pre-token that Hugging Face's BPE left in several pieces by tiktoken's rule."""
        out: list[int] = []
        group: list[int] = []
        last = None
        for i, word in zip(encoding.ids, encoding.word_ids):
            special = i in self.id_to_special
            if special or word != last:
                out += self._merge(group)
                group = []
            if special:
                out.append(i)
                last = None
            else:
                group.append(i)
                last = word
        return out + self._merge(group)

    def _merge(self, ids: list[int]) -> list[int]:
        if len(ids) < 2:
            return ids
        piece = "".join(self._tok.id_to_token(i) for i in ids)
        if piece not in self._merged:
            if self._ranks is None:
                vocab = self._tok.get_vocab(with_added_tokens=False)
                self._ranks = {t: i for t, i in vocab.items() if i not in self.id_to_special}
            parts = list(piece)  # byte-level characters: one per byte
            while len(parts) > 1:
                joins = [
                    (r, k)
                    for k, (a, b) in enumerate(zip(parts, parts[1:]))
                    if (r := self._ranks.get(a + b)) is not None
                ]
                if not joins:
                    break
                _, k = min(joins)
                parts[k : k + 2] = [parts[k] + parts[k + 1]]
            self._merged[piece] = [self._ranks[p] for p in parts]
        return list(self._merged[piece])

    def is_timestamp(self, token: int) -> bool:
        return self.timestamp_begin is not None and self.timestamp_begin <= token < self.timestamp_begin + N_TIMESTAMPS

    def is_special(self, token: int) -> bool:
        return token >= self.eot

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special and timestamp tokens are dropped unless ``skip_special_tokens=False``."""
        if skip_special_tokens:
            return self._tok.decode([i for i in ids if not self.is_special(i)], skip_special_tokens=False)
        return self.decode_with_timestamps(ids)

    def decode_with_timestamps(self, ids: list[int]) -> str:
        """Text with every special token shown, timestamps as ``<|1.24|>``."""
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if self.is_special(i):
                if run:
                    parts.append(self._tok.decode(run, skip_special_tokens=False))
                    run = []
                if self.is_timestamp(i):
                    parts.append(f"<|{(i - self.timestamp_begin) * TIME_PRECISION:.2f}|>")
                else:
                    parts.append(self.id_to_special.get(i, f"<|{i}|>"))
            else:
                run.append(i)
        if run:
            parts.append(self._tok.decode(run, skip_special_tokens=False))
        return "".join(parts)

    def token_to_string(self, token: int) -> str:
        """One token as text (special tokens by name), for tables and plots."""
        if self.is_special(token):
            return self.decode_with_timestamps([token])
        return self._tok.decode([token], skip_special_tokens=False)


class Qwen2AudioTokenizer:
    """A thin adapter over a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer/processor:
    ``encode`` (no special tokens added, special-token strings in the text are parsed),
    ``decode`` (special tokens skipped) and ``token_to_id``."""

    def __init__(self, tok: Any):
        tok = getattr(tok, "tokenizer", tok)  # a processor holds its tokenizer
        self._tok = tok
        self._fast = hasattr(tok, "token_to_id") and not hasattr(tok, "convert_tokens_to_ids")

    @classmethod
    def wrap(cls, tok: Any | None) -> "Qwen2AudioTokenizer | None":
        """``tok`` as this adapter (``None`` and adapters stay as they are)."""
        return tok if tok is None or isinstance(tok, cls) else cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> "Qwen2AudioTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        if self._fast:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        if self._fast:
            return self._tok.token_to_id(token)
        i = self._tok.convert_tokens_to_ids(token)
        return None if i is None or i == getattr(self._tok, "unk_token_id", None) else int(i)


__all__ = ["Qwen2AudioTokenizer", "WhisperTokenizer"]
