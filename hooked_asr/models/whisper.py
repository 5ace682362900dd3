"""HookedWhisper: Whisper (tiny to large-v3) as explicit hooked modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from hooked_asr.components.audio_encoder import AudioEncoder
from hooked_asr.components.decoder import LayerCache, TextDecoder
from hooked_asr.components.products import keep_packed_weights
from hooked_asr.config import ModelConfig
from hooked_asr.models.runner import decode_from_prefix, encode_from
from hooked_asr.models.base import HookedEncoderDecoder, ModelCapabilities, TeacherForcedInputs
from hooked_asr.models.decoding.results import TranscriptionResult
from hooked_asr.models.decoding.transcription import PromptGroup
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.results import Segment
from hooked_asr.loading.whisper_weights import whisper_config_from_hf, convert_hf_whisper_weights


class HookedWhisper(HookedEncoderDecoder):
    """Whisper with a hook point on every intermediate (names in docs/architecture.md).

    >>> logits = model(input_features=mel, decoder_input_ids=tokens)      # [batch, pos, vocab]
    >>> logits, cache = model.run_with_cache(input_features=mel, decoder_input_ids=tokens)
    >>> model.transcribe("speech.wav").text
    >>> model.transcribe("lecture.wav", beam_size=5, word_timestamps=True).words[0]
    """

    capabilities = ModelCapabilities(
        resume_at_block=True,
        resume_at_head=True,
        prefix_sharing=True,
        timestamps=True,
        word_timestamps=True,
        long_form="seek",
        encode_inputs=("input_features",),
    )

    def __init__(self, cfg: ModelConfig, tokenizer: Any | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder)
        self.decoder = TextDecoder(cfg.decoder)
        self.tokenizer = tokenizer
        self.setup()

    # ---- forward passes --------------------------------------------------------------
    def encode(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        attn_z: Float[torch.Tensor, "batch frame head d_head"] | None = None,
    ) -> Float[torch.Tensor, "batch frame d_model"]:
        """What the decoder reads, ``encoder.hook_out`` (or, with ``stop_at_layer=l``, the residual
        after ``l`` blocks); with ``start_at_layer=l`` the input is ``encoder.blocks.{l}.hook_resid_pre``
        and only blocks ``l..`` run; with ``attn_z`` (``encoder.blocks.{l}.attn.hook_z`` of the same
        run) block ``l`` starts at ``hook_z``, after its attention. Inputs are cast to the weights'
        dtype here, at the model's edge: features are computed in float32 whatever the model's dtype."""
        w = self.encoder.conv1.weight
        input_features = input_features.to(dtype=w.dtype)
        if attn_z is None:
            return self.encoder(input_features, stop_at_layer=stop_at_layer, start_at_layer=start_at_layer)
        return encode_from(
            self.encoder, input_features, start_at_layer, attn_z.to(dtype=w.dtype), stop_at_layer=stop_at_layer
        )

    def decode(
        self,
        decoder_input_ids: Int[torch.Tensor, "batch pos"],
        encoder_hidden_states: Float[torch.Tensor, "batch frame d_model"] | None,
        past_key_values: list[LayerCache] | None = None,
        stop_at_layer: int | None = None,
        **prefix: Any,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Decoder logits ``[batch, pos, vocab]`` and the key/value cache to continue from.
        ``prefix``: ``start_at_layer``, ``resid_pre``, ``run_rows`` of :func:`~hooked_asr.models.runner.decode_from_prefix`."""
        if encoder_hidden_states is not None and encoder_hidden_states.shape[-1] != self.cfg.decoder.d_model:
            raise ValueError(
                f"encoder_hidden_states must be [batch, frame, {self.cfg.decoder.d_model}], got "
                f"{tuple(encoder_hidden_states.shape)}"
            )
        if encoder_hidden_states is not None:  # e.g. a float32 encoder output given to a half-precision decoder
            encoder_hidden_states = encoder_hidden_states.to(dtype=self.decoder.W_E.dtype)
        if prefix:
            return decode_from_prefix(
                self.decoder,
                decoder_input_ids,
                encoder_hidden_states,
                past_key_values,
                stop_at_layer=stop_at_layer,
                **prefix,
            )
        return self.decoder(
            decoder_input_ids,
            encoder_out=encoder_hidden_states,
            past_kv=past_key_values,
            stop_at_layer=stop_at_layer,
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

    def prepare_features(
        self, audio: Any, sampling_rate: int | None = None, allow_silence: bool = False
    ) -> dict[str, torch.Tensor]:
        from hooked_asr.audio import prepare_features

        features, _ = prepare_features(
            audio, self.cfg.encoder.n_mels, sampling_rate=sampling_rate, allow_silence=allow_silence
        )
        return {"input_features": features.to(self.device)}

    def finish_encoder(self, resid: Float[torch.Tensor, "batch frame d_model"], **_: Any) -> torch.Tensor:
        return self.encoder.ln_final(resid)

    def teacher_forced_inputs(
        self,
        audio: Any,
        continuation: Sequence[int] = (),
        *,
        language: str | None = None,
        task: str = "transcribe",
        sampling_rate: int | None = None,
        allow_silence: bool = False,
    ) -> TeacherForcedInputs:
        """``model(**inputs.kwargs)`` runs the prompt ``sot_sequence(language, task)`` then
        ``continuation``. ``language=None``: detected on multilingual models, as ``transcribe`` does."""
        self._check_language_task(language, task)
        items, _ = self._transcription_inputs(audio, sampling_rate, allow_silence)
        feats = (
            items["input_features"] if isinstance(items, dict) else self._short_form_features(items)["input_features"]
        )
        if language is None and self.cfg.is_multilingual and self.cfg.lang_to_id:
            langs = set(self.detect_language(feats))
            if len(langs) != 1:
                raise ValueError(
                    f"the items are detected as {sorted(langs)}: pass language= (one prompt for the batch)"
                )
            language = langs.pop()
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

    def _decode_step(
        self, context: torch.Tensor, input_ids: torch.Tensor, past_kv: Any, **prefix: Any
    ) -> tuple[torch.Tensor, Any]:
        # With a cache the cross-attention keys/values are reused, so the encoder output is not re-read
        # (a cache may lack some layers' cross keys/values: a shared prefix recomputes the hooked ones).
        needs = not past_kv or any("cross" not in c for c in past_kv[prefix.get("start_at_layer") or 0 :])
        return self.decode(input_ids, context if needs else None, past_kv, **prefix)

    def sot_sequence(
        self, language: str | None = None, task: str = "transcribe", timestamps: bool = False
    ) -> list[int]:
        """Whisper's prompt: ``<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>``
        (``timestamps=True``: without ``<|notimestamps|>``, so timestamp tokens are predicted)."""
        seq = [self.cfg.decoder_start_token_id]
        if self.cfg.is_multilingual and self.cfg.lang_to_id:
            lang_key = f"<|{language}|>" if language else None
            if lang_key not in self.cfg.lang_to_id:
                valid = sorted(k.strip("<|>") for k in self.cfg.lang_to_id)
                raise ValueError(f"unknown language {language!r}; this model knows: {', '.join(valid)}")
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            seq += [self.cfg.lang_to_id[lang_key], self.task_token(task)]
        if self.cfg.no_timestamps_token_id is not None and not timestamps:
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
    def language_probabilities(
        self, input_features: Float[torch.Tensor, "batch n_mels frames"]
    ) -> list[dict[str, float]]:
        """``p(language | audio)`` per item (openai-whisper's ``detect_language``): the softmax of the
        first decoder step's logits over the language tokens only."""
        if not (self.cfg.is_multilingual and self.cfg.lang_to_id):
            return [{"en": 1.0} for _ in range(input_features.shape[0])]
        sot = torch.full((input_features.shape[0], 1), self.cfg.decoder_start_token_id, device=input_features.device)
        logits = self(input_features=input_features, decoder_input_ids=sot)[:, -1]
        codes = list(self.cfg.lang_to_id)
        ids = torch.tensor([self.cfg.lang_to_id[c] for c in codes], device=logits.device)
        probs = logits[:, ids].float().softmax(-1)
        return [{c.strip("<|>"): p for c, p in zip(codes, row)} for row in probs.tolist()]

    def detect_language(self, input_features: Float[torch.Tensor, "batch n_mels frames"]) -> list[str]:
        """Most likely language per item (the argmax of :meth:`language_probabilities`)."""
        return [max(p, key=p.get) for p in self.language_probabilities(input_features)]

    # ---- the pieces of the decoding core that are Whisper's ----------------------------
    def _special(self, name: str, offset_from_no_timestamps: int) -> int:
        tok = self.tokenizer
        got = getattr(tok, "special", {}).get(name) if tok is not None else None
        if got is not None:
            return int(got)
        if self.cfg.no_timestamps_token_id is None:
            raise ValueError(f"no id for {name}: the config has no no_timestamps_token_id and there is no tokenizer")
        # Every vocabulary ends its specials with ... <|startofprev|> <|nospeech|> <|notimestamps|>.
        return self.cfg.no_timestamps_token_id - offset_from_no_timestamps

    def _window_prompt(self, language: str | None, task: str, timestamps: bool, previous: Sequence[int]) -> list[int]:
        """``[<|startofprev|> previous[-223:]] + sot_sequence``: openai-whisper keeps the last
        ``n_ctx // 2 - 1`` tokens of the previous text (or of ``initial_prompt``)."""
        prev: list[int] = []
        if previous and (self.tokenizer is not None or self.cfg.no_timestamps_token_id is not None):
            prev = [self._special("<|startofprev|>", 2)] + list(previous)[-(self.cfg.decoder.n_ctx // 2 - 1) :]
        return prev + self.sot_sequence(language, task, timestamps)

    def _no_speech_query(self, prompt: Sequence[int]) -> tuple[int, int] | None:
        sot = self.cfg.decoder_start_token_id
        if self.cfg.no_timestamps_token_id is None or sot not in prompt:
            return None
        return list(prompt).index(sot), self._special("<|nospeech|>", 1)

    def _check_language_task(self, language: str | None, task: str) -> None:
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
        if not self.cfg.is_multilingual:
            if language not in (None, "en"):
                raise ValueError(
                    f"language={language!r}: {self.cfg.name} is English-only; pass language='en' or None, "
                    "or load a multilingual checkpoint (e.g. whisper-base)"
                )
            if task == "translate":
                raise ValueError(
                    f"task='translate': {self.cfg.name} is English-only and cannot translate; "
                    "use a multilingual checkpoint (e.g. whisper-base)"
                )

    def _short_form_features(self, waves: list[Any]) -> dict[str, torch.Tensor]:
        from hooked_asr.audio import log_mel_spectrogram

        mel = torch.cat([log_mel_spectrogram(w, self.cfg.encoder.n_mels) for w in waves])
        return {"input_features": mel.to(self.device)}

    def _prompt_groups(self, features: dict[str, torch.Tensor], opts: TranscribeOptions) -> list[PromptGroup]:
        feats = features["input_features"]
        langs: list[str | None] = [opts.language] * feats.shape[0]
        if opts.language is None and self.cfg.is_multilingual and self.cfg.lang_to_id:
            langs = list(self.detect_language(feats))
        groups: dict[str | None, list[int]] = {}
        for i, lang in enumerate(langs):
            groups.setdefault(lang, []).append(i)
        initial = self._initial_tokens(opts)
        return [
            PromptGroup(self._window_prompt(lang, opts.task, not opts.without_timestamps, initial), rows, lang, {})
            for lang, rows in groups.items()
        ]

    def _transcribe_long(self, wave: Any, opts: TranscribeOptions) -> TranscriptionResult:
        import torch.nn.functional as F

        from hooked_asr.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
        from hooked_asr.models.decoding.longform import transcribe_sequential

        mel = log_mel_spectrogram(wave, self.cfg.encoder.n_mels, padding=N_SAMPLES)[0]
        content_frames = mel.shape[-1] - N_FRAMES
        language = opts.language
        if language is None and self.cfg.is_multilingual and self.cfg.lang_to_id:
            language = self.detect_language(F.pad(mel[:, :N_FRAMES], (0, 0))[None].to(self.device))[0]
        with keep_packed_weights():  # the unembedding packed for oneDNN once for every window (components.products)
            return transcribe_sequential(self, mel, content_frames, opts, language, self._initial_tokens(opts))

    def alignment_matrix(self, text_tokens: Sequence[int], **kwargs: Any) -> torch.Tensor:
        """The matrix word timings are read from, ``[token + 1, frame]``: see
        :func:`hooked_asr.models.decoding.alignment_matrix` (same keyword arguments)."""
        from hooked_asr.models.decoding.timing import alignment_matrix

        return alignment_matrix(self, text_tokens, **kwargs)[0]

    def _add_word_timestamps(self, segments: list[Segment], **kwargs: Any) -> float:
        from hooked_asr.models.decoding.timing import add_word_timestamps

        return add_word_timestamps(self, segments, **kwargs)

    # ---- loading ---------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls,
        hf_state_dict: Mapping[str, torch.Tensor],
        cfg: ModelConfig,
        tokenizer: Any | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> "HookedWhisper":
        """Build from a Hugging Face-named Whisper state dict and a config."""
        weights = convert_hf_whisper_weights(hf_state_dict, cfg)
        with torch.device("meta"):
            model = cls(cfg, tokenizer=tokenizer)
        model._load_pieces([{k: v.to(dtype) for k, v in weights.items()}], device)
        return model.to(device).eval()

    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any | None = None, **kwargs: Any) -> "HookedWhisper":
        """Convert an in-memory ``transformers`` Whisper model (weights are copied)."""
        cfg = whisper_config_from_hf(
            hf_model.config,
            getattr(hf_model, "generation_config", None),
            name=getattr(hf_model.config, "_name_or_path", "") or "whisper",
        )
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


__all__ = ["HookedWhisper"]
