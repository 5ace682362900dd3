"""HookedWhisper: Whisper (tiny to large-v3) as explicit hooked modules."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from hooked_asr.components.audio_encoder import AudioEncoder
from hooked_asr.components.decoder import LayerCache, TextDecoder
from hooked_asr.config import ModelConfig
from hooked_asr.models.base import HookedEncoderDecoder, TeacherForcedInputs, TranscriptionResult
from hooked_asr.loading.whisper_weights import WeightConversionError, config_from_hf, convert_hf_whisper_weights


class HookedWhisper(HookedEncoderDecoder):
    """Whisper with a hook point on every intermediate (names in DESIGN.md).

    >>> logits = model(input_features=mel, decoder_input_ids=tokens)      # [batch, pos, vocab]
    >>> logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens)
    >>> model.transcribe("speech.wav").text
    """

    def __init__(self, cfg: ModelConfig, tokenizer: Any | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder)
        self.decoder = TextDecoder(cfg.decoder)
        self.tokenizer = tokenizer
        self.setup()

    # ---- forward passes --------------------------------------------------------------
    def encode(
        self, input_features: Float[torch.Tensor, "batch n_mels frames"], stop_at_layer: int | None = None
    ) -> Float[torch.Tensor, "batch frame d_model"]:
        """``encoder.hook_out`` (or, with ``stop_at_layer=l``, the residual after ``l`` blocks)."""
        return self.encoder(input_features, stop_at_layer=stop_at_layer)

    def decode(
        self,
        decoder_input_ids: Int[torch.Tensor, "batch pos"],
        encoder_hidden_states: Float[torch.Tensor, "batch frame d_model"] | None,
        past_key_values: list[LayerCache] | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Decoder logits ``[batch, pos, vocab]`` and the key/value cache to continue from."""
        if encoder_hidden_states is not None and encoder_hidden_states.shape[-1] != self.cfg.decoder.d_model:
            raise ValueError(
                f"encoder_hidden_states must be [batch, frame, {self.cfg.decoder.d_model}], got "
                f"{tuple(encoder_hidden_states.shape)}"
            )
        return self.decoder(
            decoder_input_ids, encoder_out=encoder_hidden_states, past_kv=past_key_values, stop_at_layer=stop_at_layer
        )

    def forward(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"] | None = None,
        decoder_input_ids: Int[torch.Tensor, "batch pos"] | None = None,
        encoder_hidden_states: Float[torch.Tensor, "batch frame d_model"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """Teacher-forced logits. Pass ``input_features`` or a precomputed ``encoder_hidden_states``."""
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required, e.g. model.sot_sequence() as a [1, n] tensor")
        if encoder_hidden_states is None:
            if input_features is None:
                raise ValueError("pass input_features (log-mel) or encoder_hidden_states")
            encoder_hidden_states = self.encode(input_features)
        if encoder_hidden_states.shape[0] != decoder_input_ids.shape[0]:
            raise ValueError(
                f"batch sizes differ: audio {encoder_hidden_states.shape[0]}, tokens {decoder_input_ids.shape[0]}"
            )
        return self.decode(decoder_input_ids, encoder_hidden_states)[0]

    def prepare_features(self, audio: Any, sampling_rate: int | None = None) -> dict[str, torch.Tensor]:
        from hooked_asr.audio import prepare_features

        features, _ = prepare_features(audio, self.cfg.encoder.n_mels, sampling_rate=sampling_rate)
        return {"input_features": features.to(self.device_of_weights)}

    def finish_encoder(self, resid: Float[torch.Tensor, "batch frame d_model"], **_: Any) -> torch.Tensor:
        return self.encoder.ln_final(resid)

    def teacher_forced_inputs(
        self, audio: Any, continuation: Sequence[int] = (), language: str | None = "en", task: str = "transcribe"
    ) -> TeacherForcedInputs:
        feats = self.prepare_features(audio)["input_features"]
        prompt = self.sot_sequence(language, task)
        tokens = torch.tensor([prompt + list(continuation)], device=feats.device).expand(feats.shape[0], -1)
        return TeacherForcedInputs(
            kwargs={"input_features": feats, "decoder_input_ids": tokens}, tokens=tokens, prompt_len=len(prompt)
        )

    # ---- generation ------------------------------------------------------------------
    def _generation_context(
        self, input_features: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        return self.encode(input_features) if encoder_hidden_states is None else encoder_hidden_states

    def _decode_step(self, context: torch.Tensor, input_ids: torch.Tensor, past_kv: Any) -> tuple[torch.Tensor, Any]:
        # With a cache the cross-attention keys/values are reused, so the encoder output is not re-read.
        return self.decode(input_ids, None if past_kv else context, past_kv)

    def sot_sequence(self, language: str | None = None, task: str = "transcribe") -> list[int]:
        """Whisper's prompt: ``<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>``."""
        seq = [self.cfg.decoder_start_token_id]
        if self.cfg.is_multilingual and self.cfg.lang_to_id:
            lang_key = f"<|{language}|>" if language else None
            if lang_key not in self.cfg.lang_to_id:
                valid = sorted(k.strip("<|>") for k in self.cfg.lang_to_id)
                raise ValueError(f"unknown language {language!r}; this model knows: {', '.join(valid)}")
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            seq += [self.cfg.lang_to_id[lang_key], self.task_token(task)]
        if self.cfg.no_timestamps_token_id is not None:
            seq.append(self.cfg.no_timestamps_token_id)
        return seq

    def task_token(self, task: str) -> int:
        if task in self.cfg.task_to_id:
            return self.cfg.task_to_id[task]
        if self.cfg.no_timestamps_token_id is None:
            raise ValueError(f"the config has no id for task {task!r} and no no_timestamps id to derive it from")
        # Every multilingual vocabulary orders ... translate, transcribe, sot_lm, sot_prev, nospeech, notimestamps.
        return self.cfg.no_timestamps_token_id - (5 if task == "translate" else 4)

    @torch.no_grad()
    def detect_language(self, input_features: Float[torch.Tensor, "batch n_mels frames"]) -> list[str]:
        """Most likely language per item: argmax of the first decoder step over language tokens."""
        if not (self.cfg.is_multilingual and self.cfg.lang_to_id):
            return ["en"] * input_features.shape[0]
        sot = torch.full((input_features.shape[0], 1), self.cfg.decoder_start_token_id, device=input_features.device)
        logits = self(input_features=input_features, decoder_input_ids=sot)[:, -1]
        codes = list(self.cfg.lang_to_id)
        ids = torch.tensor([self.cfg.lang_to_id[c] for c in codes], device=logits.device)
        best = logits[:, ids].argmax(-1)
        return [codes[i].strip("<|>") for i in best.tolist()]

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        max_new_tokens: int | None = None,
        use_cache: bool = True,
        sampling_rate: int | None = None,
    ) -> TranscriptionResult | list[TranscriptionResult]:
        """Greedy transcription with every hook live at every step.

        ``audio``: a path (wav/flac), a 1-D float array at ``sampling_rate`` (16 kHz if not
        given), a list of those (returns a list), or log-mel ``input_features``
        ``[batch, n_mels, 3000]`` (returns a list). ``language=None`` detects it on
        multilingual models. See :mod:`hooked_asr.models.base` for what hooks see.
        """
        from hooked_asr.audio import prepare_features

        features, is_batch = prepare_features(audio, self.cfg.encoder.n_mels, sampling_rate=sampling_rate)
        features = features.to(self.device_of_weights)
        langs = [language] * features.shape[0] if language else None
        if langs is None and self.cfg.is_multilingual and self.cfg.lang_to_id:
            langs = self.detect_language(features)
        results = []
        # One batch per prompt: items whose detected languages differ get different prompts.
        groups: dict[str | None, list[int]] = {}
        for i in range(features.shape[0]):
            groups.setdefault(langs[i] if langs else None, []).append(i)
        by_index: dict[int, TranscriptionResult] = {}
        for lang, idx in groups.items():
            prompt = self.sot_sequence(lang, task)
            out = self.generate(features[idx], prompt, max_new_tokens=max_new_tokens, use_cache=use_cache)
            for row, i in enumerate(idx):
                toks = out.tokens[row].tolist()
                lps = out.logprobs[row].tolist()
                if self.cfg.eos_token_id in toks:
                    cut = toks.index(self.cfg.eos_token_id)
                    toks, lps = toks[:cut], lps[:cut]
                text = self.tokenizer.decode(toks) if self.tokenizer is not None else None
                by_index[i] = TranscriptionResult(
                    text=text.strip() if text is not None else None,
                    tokens=toks,
                    token_logprobs=lps,
                    prompt=prompt,
                    finished=bool(out.finished[row]),
                    language=lang,
                )
        results = [by_index[i] for i in range(features.shape[0])]
        return results if is_batch else results[0]

    @property
    def device_of_weights(self) -> torch.device:
        return self.decoder.W_E.device

    # ---- loading ---------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls, hf_state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, tokenizer: Any | None = None,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    ) -> "HookedWhisper":
        """Build from a Hugging Face-named Whisper state dict and a config."""
        weights = convert_hf_whisper_weights(hf_state_dict, cfg)
        with torch.device("meta"):
            model = cls(cfg, tokenizer=tokenizer)
        own = model.state_dict()
        bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in weights.items() if k in own and own[k].shape != v.shape]
        missing = sorted(set(own) - set(weights))
        if bad or missing:
            raise WeightConversionError(
                "checkpoint does not fit the config: " + "; ".join(bad[:5] + [f"missing {m}" for m in missing[:5]])
            )
        model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
        return model.to(device).eval()

    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any | None = None, **kwargs: Any) -> "HookedWhisper":
        """Convert an in-memory ``transformers`` Whisper model (weights are copied)."""
        cfg = config_from_hf(hf_model.config, getattr(hf_model, "generation_config", None),
                             name=getattr(hf_model.config, "_name_or_path", "") or "whisper")
        dtype = kwargs.pop("dtype", next(hf_model.parameters()).dtype)
        sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
        return cls.from_state_dict(sd, cfg, tokenizer=_as_tokenizer(tokenizer), dtype=dtype, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, **kwargs: Any) -> "HookedWhisper":
        """Load from a local Hugging Face-layout directory (config.json + *.safetensors) or a
        hub id (needs network access); CTranslate2 directories load with ``hooked_asr.load_model(dir)``."""
        from hooked_asr.loading.hf import load_hf_whisper_dir

        sd, cfg, tokenizer = load_hf_whisper_dir(path_or_hub_id)
        return cls.from_state_dict(sd, cfg, tokenizer=tokenizer, **kwargs)


def _as_tokenizer(tokenizer: Any | None) -> Any | None:
    """Our tokenizer as it is; a transformers tokenizer or processor wrapped so ``decode`` works."""
    if tokenizer is None or hasattr(tokenizer, "sot_sequence"):
        return tokenizer
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor holds its tokenizer
    from hooked_asr.tokenizer import WhisperTokenizer

    return WhisperTokenizer.from_hf(tok)
