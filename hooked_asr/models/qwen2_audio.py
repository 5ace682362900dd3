"""HookedQwen2Audio: Qwen2-Audio as explicit hooked modules.

    mel [batch, n_mels, 3000] --AudioEncoder (Whisper's encoder, masked)--> blocks
        --avg pool (stride 2)--> encoder.hook_pooled --ln_final--> encoder.hook_out   [batch, 750, d_audio]
        --projector: x W + b--> projector.hook_out                                    [batch, 750, d_model]
    prompt ids with n <|AUDIO|> placeholders --W_E--> embeddings; placeholder i <- audio embedding i
        (n = the number of real audio positions) --> decoder.hook_embed (the merged sequence)
        --> Qwen2 blocks (RMSNorm, rotary q/k, grouped-query attention, gated SiLU MLP)
        --> ln_final --> x W_U --> decoder.hook_logits

The audio tower is :class:`~hooked_asr.components.audio_encoder.AudioEncoder` and the
language model is :class:`~hooked_asr.components.decoder.TextDecoder`, the same modules
HookedWhisper uses, configured for Qwen2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.components.audio_encoder import AudioEncoder
from hooked_asr.components.decoder import LayerCache, TextDecoder
from hooked_asr.components.projector import AudioProjector, audio_token_counts
from hooked_asr.config import ModelConfig
from hooked_asr.models.runner import encode_from
from hooked_asr.models.base import HookedEncoderDecoder, ModelCapabilities, TeacherForcedInputs
from hooked_asr.models.decoding.results import TranscriptionResult
from hooked_asr.models.decoding.transcription import PromptGroup
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.loading.hf import as_dtype
from hooked_asr.loading.qwen2_audio_weights import SPECIAL_TOKENS, qwen2_audio_config_from_hf, iter_converted
from hooked_asr.tokenizer import Qwen2AudioTokenizer

AUDIO_TOKEN = "<|AUDIO|>"
SYSTEM_PROMPT = "You are a helpful assistant."
# Instruct model: a chat turn; base model: its documented speech-recognition prompt.
DEFAULT_INSTRUCTION = "Transcribe the speech into text."
BASE_ASR_PROMPT = "Detect the language and recognize the speech: <|{language}|>"


@dataclass
class AudioContext:
    """What the decoder needs from the audio: projected embeddings and how many of them are real."""

    audio_embeds: Float[torch.Tensor, "n_audio pooled d_model"]
    n_audio_tokens: Int[torch.Tensor, " n_audio"]


class HookedQwen2Audio(HookedEncoderDecoder):
    """Qwen2-Audio with a hook point on every intermediate (names in docs/architecture.md).

    >>> logits = model(input_ids=ids, input_features=mel, feature_attention_mask=mask)  # [batch, pos, vocab]
    >>> logits, cache = model.run_with_cache(**model.teacher_forced_inputs(audio).kwargs)
    >>> model.transcribe("speech.wav").text

    ``input_ids`` must hold one ``<|AUDIO|>`` placeholder per real audio position (as
    ``Qwen2AudioProcessor`` expands them); :meth:`transcription_prompt` builds such prompts.
    "What the decoder reads" (``encoder_hidden_states``, :meth:`finish_encoder`) is the
    projector's output ``[n_audio, pooled, d_model]``.
    Memory on the real 7B checkpoint: README, "Qwen2-Audio".
    """

    capabilities = ModelCapabilities(long_form="chunks", encode_inputs=("input_features", "feature_attention_mask"))

    def __init__(self, cfg: ModelConfig, tokenizer: Any | None = None):
        super().__init__()
        if cfg.encoder.pool_stride != 2:
            raise ValueError(
                f"Qwen2-Audio pools the audio tower with stride 2; the config has pool_stride={cfg.encoder.pool_stride}"
            )
        if "audio_token_id" not in cfg.extra:
            raise ValueError("cfg.extra['audio_token_id'] (the <|AUDIO|> placeholder id) is required")
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder)
        self.projector = AudioProjector(cfg.encoder.d_model, cfg.decoder.d_model)
        self.decoder = TextDecoder(cfg.decoder)
        self.tokenizer = Qwen2AudioTokenizer.wrap(tokenizer)
        self.setup()

    @property
    def audio_token_id(self) -> int:
        return int(self.cfg.extra["audio_token_id"])

    default_max_new_tokens = 256

    # ---- audio tower -----------------------------------------------------------------
    def _feature_mask(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The 0/1 mask over mel frames; all ones (no padding) when not given."""
        n_frames = input_features.shape[-1]
        if feature_attention_mask is None:
            return torch.ones(input_features.shape[0], n_frames, dtype=torch.long, device=input_features.device)
        if feature_attention_mask.shape != (input_features.shape[0], n_frames):
            raise ValueError(
                f"feature_attention_mask must be [batch, mel_frames] = [{input_features.shape[0]}, {n_frames}], "
                f"got {tuple(feature_attention_mask.shape)}"
            )
        n = feature_attention_mask.sum(-1)
        if (n < 1).any():
            raise ValueError(f"feature_attention_mask marks no real frame in rows {(n < 1).nonzero()[:, 0].tolist()}")
        return feature_attention_mask.to(input_features.device)

    def encoder_attention_mask(
        self, feature_attention_mask: Int[torch.Tensor, "batch mel_frames"], dtype: torch.dtype
    ) -> Float[torch.Tensor, "batch 1 1 frame"] | None:
        """Additive mask over the tower's frames: ``0`` for the first ``(n - 1) // 2 + 1``
        frames (``n`` real mel frames), the dtype's minimum beyond (as HF's eager mask).
        ``None`` when nothing is padded."""
        conv, _ = audio_token_counts(feature_attention_mask)
        n_ctx = self.cfg.encoder.n_ctx
        if (conv >= n_ctx).all():
            return None
        pad = torch.arange(n_ctx, device=conv.device)[None, :] >= conv[:, None]
        mask = torch.zeros(pad.shape, dtype=dtype, device=conv.device).masked_fill(pad, torch.finfo(dtype).min)
        return mask[:, None, None, :]

    def encode(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        feature_attention_mask: Int[torch.Tensor, "batch frames"] | None = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        attn_z: Float[torch.Tensor, "batch frame head d_head"] | None = None,
    ) -> Float[torch.Tensor, "batch frame d_audio"]:
        """What the decoder reads: the projector's output ``[batch, n_ctx // 2, d_model]`` (the audio
        embeddings that fill the ``<|AUDIO|>`` placeholders); with ``stop_at_layer=l``, the tower's
        residual after ``l`` blocks ``[batch, n_ctx, d_audio]`` (``finish_encoder`` turns it into the
        former). Padded mel frames are masked as keys. ``start_at_layer`` / ``attn_z`` resume as
        Whisper's ``encode`` (pass the ``feature_attention_mask`` of the run they came from)."""
        if stop_at_layer is None:
            return self.projector(
                self.encode_audio_tower(
                    input_features, feature_attention_mask, start_at_layer=start_at_layer, attn_z=attn_z
                )
            )
        return self.encode_audio_tower(input_features, feature_attention_mask, stop_at_layer, start_at_layer, attn_z)

    def encode_audio_tower(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        feature_attention_mask: Int[torch.Tensor, "batch frames"] | None = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        attn_z: Float[torch.Tensor, "batch frame head d_head"] | None = None,
    ) -> Float[torch.Tensor, "batch frame d_audio"]:
        """``encoder.hook_out`` (pooled and normed, before the projector) ``[batch, n_ctx // 2, d_audio]``,
        or the residual after ``stop_at_layer`` blocks; ``start_at_layer`` / ``attn_z`` as :meth:`encode`."""
        w = self.encoder.conv1.weight
        input_features = input_features.to(device=w.device, dtype=w.dtype)
        if start_at_layer is None:
            mask = self._feature_mask(input_features, feature_attention_mask)
        else:
            mask = (
                feature_attention_mask
                if feature_attention_mask is not None
                else torch.ones(input_features.shape[0], self.cfg.encoder.n_frames, dtype=torch.long, device=w.device)
            )
        attn_mask = self.encoder_attention_mask(mask, w.dtype)
        return encode_from(self.encoder, input_features, start_at_layer, attn_z, attn_mask, stop_at_layer)

    def embed_audio(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        feature_attention_mask: Int[torch.Tensor, "batch frames"] | None = None,
    ) -> Float[torch.Tensor, "batch pooled d_model"]:
        """``projector(encode_audio_tower(...))``: the audio embeddings that replace the placeholders."""
        return self.encode(input_features, feature_attention_mask)

    def finish_encoder(self, resid: Float[torch.Tensor, "batch frame d_audio"], **_: Any) -> torch.Tensor:
        """``projector(ln_final(avg_pool(resid)))``: a tower residual ``[batch, n_ctx, d_audio]``
        turned into what the decoder reads ``[batch, n_ctx // 2, d_model]``."""
        if resid.shape[1] != self.cfg.encoder.n_ctx:
            raise ValueError(
                f"finish_encoder expects the tower's residual [batch, {self.cfg.encoder.n_ctx}, d_audio] "
                f"(encode(..., stop_at_layer=l)), got {tuple(resid.shape)}"
            )
        return self.projector(self.encoder.ln_final(self.encoder.pool(resid)))

    # ---- merging audio into the prompt -------------------------------------------------
    def merge_audio(
        self,
        input_ids: Int[torch.Tensor, "batch pos"],
        audio_embeds: Float[torch.Tensor, "n_audio pooled d_model"],
        n_audio_tokens: Int[torch.Tensor, " n_audio"],
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Token embeddings with the placeholders overwritten by audio, as HF does.

        The first ``n_audio_tokens[i]`` embeddings of audio ``i`` (audios in order) fill the
        ``<|AUDIO|>`` positions in reading order (row by row, left to right).
        """
        self._check_ids(input_ids)
        is_audio = input_ids == self.audio_token_id
        n_place, n_tok = int(is_audio.sum()), n_audio_tokens.tolist()
        name = f"{AUDIO_TOKEN} (id {self.audio_token_id})"
        fix = "build prompts with model.transcription_prompt(n_audio_tokens), which repeats it once per audio position"
        if n_place == 0:
            raise ValueError(f"the prompt has no audio placeholder {name}, so the audio has nowhere to go; {fix}")
        if n_place != sum(n_tok):
            per_row = is_audio.sum(-1).tolist()
            if len(n_tok) > input_ids.shape[0]:
                what = f"more audio than prompts: {len(n_tok)} audio inputs for {input_ids.shape[0]} prompt rows"
            elif sum(n_tok) > n_place:
                what = "more audio than placeholders"
            else:
                what = "more placeholders than audio"
            raise ValueError(
                f"{what}: the audio gives {n_tok} embeddings (after pooling; {sum(n_tok)} in all) but the prompt "
                f"rows hold {per_row} placeholders {name}; {fix}"
            )
        keep = (
            torch.arange(audio_embeds.shape[1], device=audio_embeds.device)[None, :]
            < n_audio_tokens.to(audio_embeds.device)[:, None]
        )
        embeds = F.embedding(input_ids, self.decoder.W_E)
        audio = audio_embeds[keep].to(embeds.dtype)
        return embeds.masked_scatter(is_audio[..., None], audio)

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, pos], got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.cfg.decoder.d_vocab):
            raise ValueError(
                f"token ids must lie in [0, {self.cfg.decoder.d_vocab - 1}] (the vocabulary), got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )

    # ---- forward passes --------------------------------------------------------------
    def decode(
        self,
        input_ids: Int[torch.Tensor, "batch pos"],
        audio_embeds: Float[torch.Tensor, "n_audio pooled d_model"] | None = None,
        n_audio_tokens: Int[torch.Tensor, " n_audio"] | None = None,
        past_key_values: list[LayerCache] | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Language-model logits ``[batch, pos, vocab]`` and the cache to continue from.

        With ``audio_embeds`` the placeholders are filled (``n_audio_tokens`` defaults to every
        pooled position); without, ids are embedded as they are (a cached step's new tokens).
        """
        input_ids = input_ids.to(self.device)
        if audio_embeds is None:
            if past_key_values is None and (input_ids == self.audio_token_id).any():
                raise ValueError(
                    f"input_ids hold audio placeholders {AUDIO_TOKEN} but no audio was given: pass "
                    "input_features (and feature_attention_mask) or encoder_hidden_states"
                )
            self._check_ids(input_ids)
            return self.decoder(input_ids, past_kv=past_key_values, stop_at_layer=stop_at_layer)
        if audio_embeds.ndim != 3 or audio_embeds.shape[-1] != self.cfg.decoder.d_model:
            raise ValueError(
                f"audio embeddings must be [n_audio, pooled, {self.cfg.decoder.d_model}] (the projector's output), "
                f"got {tuple(audio_embeds.shape)}"
            )
        if n_audio_tokens is None:
            n_audio_tokens = torch.full((audio_embeds.shape[0],), audio_embeds.shape[1], dtype=torch.long)
        embeds = self.merge_audio(input_ids, audio_embeds, n_audio_tokens)
        return self.decoder(inputs_embeds=embeds, past_kv=past_key_values, stop_at_layer=stop_at_layer)

    def forward(
        self,
        input_ids: Int[torch.Tensor, "batch pos"] | None = None,
        input_features: Float[torch.Tensor, "n_audio n_mels frames"] | None = None,
        feature_attention_mask: Int[torch.Tensor, "n_audio frames"] | None = None,
        encoder_hidden_states: Float[torch.Tensor, "n_audio pooled d_model"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """Teacher-forced logits. Pass ``input_features`` (and their mask), or precomputed
        ``encoder_hidden_states`` (projector outputs), or neither for text alone."""
        if input_ids is None:
            raise ValueError("input_ids is required, e.g. model.transcription_prompt(n) as a [1, n] tensor")
        if encoder_hidden_states is None and input_features is not None:
            encoder_hidden_states = self.embed_audio(input_features, feature_attention_mask)
        n_tok = None
        if encoder_hidden_states is not None and feature_attention_mask is not None:
            n_tok = audio_token_counts(feature_attention_mask)[1]
        return self.decode(input_ids.to(self.device), encoder_hidden_states, n_tok)[0]

    # ---- model-agnostic API ----------------------------------------------------------
    def prepare_features(
        self, audio: Any, sampling_rate: int | None = None, allow_silence: bool = False
    ) -> dict[str, torch.Tensor]:
        """Audio -> ``{"input_features": [batch, n_mels, 3000], "feature_attention_mask": [batch, 3000]}``.

        ``audio``: a path, a 1-D float array at ``sampling_rate`` (16 kHz if not given), a
        list of those, or ready log-mel features ``[batch, n_mels, frames]`` (all frames real).
        The mask marks the ``ceil(samples / 160)`` frames that hold audio, as
        ``WhisperFeatureExtractor(return_attention_mask=True)`` does.
        """
        feats, mask, _ = self._features(audio, sampling_rate, allow_silence)
        return {"input_features": feats, "feature_attention_mask": mask}

    def _features(
        self, audio: Any, sampling_rate: int | None, allow_silence: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        from hooked_asr.audio import masked_log_mel

        feats, mask, is_batch = masked_log_mel(
            audio, self.cfg.encoder.n_mels, self.cfg.encoder.n_frames, sampling_rate, allow_silence=allow_silence
        )
        return feats.to(self.device), mask.to(self.device), is_batch

    def transcription_prompt(
        self, n_audio_tokens: int, instruction: str | None = None, chat: bool | None = None, language: str = "en"
    ) -> list[int]:
        """Prompt ids with ``n_audio_tokens`` copies of ``<|AUDIO|>``.

        Chat (instruct model, the default)::

            <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
            Audio 1: <|audio_bos|><|AUDIO|>...<|audio_eos|>\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n

        Base model (``chat=False``): ``<|audio_bos|><|AUDIO|>...<|audio_eos|>{instruction}``
        with the instruction ``Detect the language and recognize the speech: <|en|>``.
        """
        tok = self._need_tokenizer()
        chat = self.cfg.extra.get("chat", True) if chat is None else chat
        if chat:
            instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
            pre = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>"
            post = f"<|audio_eos|>\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
        else:
            instruction = BASE_ASR_PROMPT.format(language=language) if instruction is None else instruction
            pre, post = "<|audio_bos|>", f"<|audio_eos|>{instruction}"
        # The placeholders are inserted as ids, so the tokenizer never sees 750 special tokens.
        return tok.encode(pre) + [self.audio_token_id] * int(n_audio_tokens) + tok.encode(post)

    def _need_tokenizer(self) -> Qwen2AudioTokenizer:
        if self.tokenizer is None:
            raise ValueError(
                "this model has no tokenizer: pass tokenizer= to from_hf/from_pretrained (a tokenizers.Tokenizer "
                "or a transformers tokenizer), or call generate() with prompt ids of your own"
            )
        got = self.tokenizer.token_to_id(AUDIO_TOKEN)
        if got != self.audio_token_id:
            raise ValueError(
                f"the tokenizer maps {AUDIO_TOKEN} to {got}, the model's config to {self.audio_token_id}: "
                "they do not belong together"
            )
        return self.tokenizer

    def _settle_eos(self) -> "HookedQwen2Audio":
        """With the chat prompt a reply ends with ``<|im_end|>``: make it the eos that generation
        stops at and the lens appends (HF configs list ``<|endoftext|>`` first or nothing)."""
        if self.tokenizer is None:
            return self
        im_end, eot = self.tokenizer.token_to_id("<|im_end|>"), self.tokenizer.token_to_id("<|endoftext|>")
        first = im_end if self.cfg.extra.get("chat", True) else eot
        if first is not None:
            self.cfg.eos_token_id = int(first)
        elif self.cfg.eos_token_id < 0 and eot is not None:
            self.cfg.eos_token_id = int(eot)
        return self

    def stop_token_ids(self) -> list[int]:
        """Ids that end a reply: the config's eos ids plus <|im_end|> and <|endoftext|>."""
        # cfg.eos_token_id first: generation stops at it, the others cut the text.
        ids = [self.cfg.eos_token_id, *self.cfg.extra.get("stop_token_ids", [])]
        if self.tokenizer is not None:
            ids += [self.tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
        return list(dict.fromkeys(i for i in ids if i is not None and i >= 0))

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
        """``model(**inputs.kwargs)`` runs the transcription prompt then ``continuation``.
        Every item of a batch must give the same number of audio tokens (same length).
        ``language`` (None: 'en') only enters the base model's prompt."""
        self._check_language_task(language, task)
        feats, mask, _ = self._features(audio, sampling_rate, allow_silence)
        n_tok = audio_token_counts(mask)[1].tolist()
        if len(set(n_tok)) != 1:
            raise ValueError(
                f"the items give {n_tok} audio tokens: one prompt needs one length; pass the items one at a time "
                "or trim them to the same length"
            )
        prompt = self.transcription_prompt(n_tok[0], language=language or "en")
        tokens = torch.tensor([prompt + list(continuation)], device=feats.device).expand(feats.shape[0], -1)
        return TeacherForcedInputs(
            kwargs={"input_ids": tokens, "input_features": feats, "feature_attention_mask": mask},
            tokens=tokens,
            prompt_len=len(prompt),
        )

    # ---- generation ------------------------------------------------------------------
    def _generation_context(
        self,
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        **_: Any,
    ) -> AudioContext:
        mask = self._feature_mask(input_features, feature_attention_mask)
        if encoder_hidden_states is None:
            encoder_hidden_states = self.embed_audio(input_features, mask)
        return AudioContext(encoder_hidden_states, audio_token_counts(mask)[1])

    def _decode_step(self, context: AudioContext, input_ids: torch.Tensor, past_kv: Any) -> tuple[torch.Tensor, Any]:
        # The audio enters once, through the prompt; a cached step only embeds the new token.
        if past_kv:
            return self.decode(input_ids, past_key_values=past_kv)
        return self.decode(input_ids, context.audio_embeds, context.n_audio_tokens)

    def _select_context(self, context: AudioContext, rows: torch.Tensor) -> AudioContext:
        rows = rows.to(context.audio_embeds.device)
        return AudioContext(
            context.audio_embeds.index_select(0, rows),
            context.n_audio_tokens.index_select(0, rows.to(context.n_audio_tokens.device)),
        )

    def _always_suppressed(self) -> list[int]:
        return [self.audio_token_id]  # the placeholder is an input, never an output

    def _check_language_task(self, language: str | None, task: str) -> None:
        if task != "transcribe":
            raise ValueError(
                f"task {task!r}: Qwen2-Audio's prompt here is for 'transcribe'; pass your own instruction="
            )

    def _window_prompt(self, language: str | None, task: str, timestamps: bool, previous: Sequence[int]) -> list[int]:
        raise NotImplementedError(
            "Qwen2-Audio's prompt depends on the number of audio tokens: use transcription_prompt"
        )

    def _short_form_features(self, waves: list[Any]) -> dict[str, torch.Tensor]:
        feats, mask, _ = self._features(list(waves), None, allow_silence=True)  # already validated
        return {"input_features": feats, "feature_attention_mask": mask}

    def _prompt_groups(self, features: dict[str, torch.Tensor], opts: TranscribeOptions) -> list[PromptGroup]:
        if opts.without_timestamps is False:
            self.require("timestamps", "transcribe(without_timestamps=False)")
        if opts.word_timestamps:
            self.require("word_timestamps", "transcribe(word_timestamps=True)")
        if opts.initial_prompt is not None:
            raise ValueError("initial_prompt is Whisper's; for Qwen2-Audio pass instruction=")
        mask = features.get("feature_attention_mask")
        if mask is None:
            mask = self._feature_mask(features["input_features"], None)
        n_tok = audio_token_counts(mask)[1].tolist()
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(n_tok):
            groups.setdefault(n, []).append(i)
        mo = opts.model_options
        return [
            PromptGroup(
                self.transcription_prompt(
                    n, mo.get("instruction"), chat=mo.get("chat"), language=opts.language or "en"
                ),
                rows,
                opts.language,
                {"n_audio_tokens": n},
            )
            for n, rows in groups.items()
        ]

    def _transcribe_long(self, wave: Any, opts: TranscribeOptions) -> TranscriptionResult:
        """Audio longer than the tower's window: consecutive windows, each transcribed on its own
        (one batch, no conditioning on the previous text); text and tokens joined in order."""
        from hooked_asr.audio import SAMPLE_RATE, chunk_audio
        from hooked_asr.models.decoding.longform import join_windows

        window = self._window_samples()
        feats = self._short_form_features(chunks := chunk_audio(wave, window / SAMPLE_RATE))
        by_window = self._transcribe_short(feats, [c.size for c in chunks], list(range(len(chunks))), opts)
        return join_windows(
            [by_window[i] for i in range(len(chunks))],
            window,
            language=opts.language,
            has_text=self.tokenizer is not None,
        )

    def transcribe(
        self,
        audio: Any,
        *,
        instruction: str | None = None,
        chat: bool | None = None,
        sampling_rate: int | None = None,
        allow_silence: bool = False,
        **options: Any,
    ) -> TranscriptionResult | list[TranscriptionResult]:
        """:meth:`HookedEncoderDecoder.transcribe` (greedy, beam search, sampling, fallback; audio longer
        than the tower's 30 s in consecutive windows) with Qwen2-Audio's prompt: ``instruction`` (default
        "Transcribe the speech into text.") and ``chat`` (the instruct model's chat turn; default from the
        checkpoint). Items are batched by length (one prompt per number of audio tokens); ``<|AUDIO|>`` is
        never generated; the text stops at the first of :meth:`stop_token_ids`. Default ``max_new_tokens=256``."""
        opts = TranscribeOptions(**options, model_options={"instruction": instruction, "chat": chat})
        return self._transcribe(audio, opts, sampling_rate=sampling_rate, allow_silence=allow_silence)

    # ---- loading ---------------------------------------------------------------------
    @classmethod
    def _empty(cls, cfg: ModelConfig, tokenizer: Any | None) -> "HookedQwen2Audio":
        with torch.device("meta"):
            return cls(cfg, tokenizer=tokenizer)

    @classmethod
    def from_hf(
        cls,
        hf_model: Any,
        tokenizer: Any | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        chat: bool = True,
    ) -> "HookedQwen2Audio":
        """Convert an in-memory ``Qwen2AudioForConditionalGeneration`` (weights are copied).
        ``chat=False`` for the base (non-instruct) model's prompt and end token."""
        cfg = qwen2_audio_config_from_hf(
            hf_model.config,
            getattr(hf_model, "generation_config", None),
            name=getattr(hf_model.config, "_name_or_path", "") or "qwen2-audio",
        )
        cfg.extra["chat"] = chat
        dtype = as_dtype(dtype) or next(hf_model.parameters()).dtype
        model = cls._empty(cfg, tokenizer)
        items = ((k, v.detach().clone()) for k, v in hf_model.state_dict().items())
        return model._load_pieces([dict(iter_converted(items, cfg, dtype, device))], device)._settle_eos()

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        dtype: torch.dtype | str | None = torch.bfloat16,
        device: str | torch.device = "cpu",
        tokenizer: Any | None = None,
        chat: bool | None = None,
    ) -> "HookedQwen2Audio":
        """Load a Hugging Face-layout checkpoint (``config.json`` + ``*.safetensors``, sharded or
        not) from a local directory or a hub id, one shard at a time.

        ``dtype`` (default bf16; ``None`` keeps the checkpoint's) and ``device`` apply to each
        tensor as it is read. The tokenizer comes from ``tokenizer.json`` (or the
        ``transformers`` tokenizer files) in the directory unless given. ``chat`` picks the
        prompt format; by default, chat unless the directory's name lacks "instruct" and its
        tokenizer has no chat template.
        """
        from hooked_asr.loading.hf import load_hf_qwen2_audio_dir

        cfg, shards, tokenizer = load_hf_qwen2_audio_dir(path_or_hub_id, dtype, device, tokenizer, chat)
        return cls._empty(cfg, tokenizer)._load_pieces(shards, device)._settle_eos()


__all__ = ["HookedQwen2Audio"]
