"""The root of every hooked model: an audio encoder feeding a text decoder.

Hooks are global state on the model (TransformerLens's warning applies): use
``model.hooks(...)``, ``run_with_hooks`` or ``run_with_cache``, which always remove the
hooks they add, even when a hook raises.

What a decoder hook sees during generation (``generate`` / ``transcribe``):

* ``use_cache=True`` (default): the first step runs the whole prompt (``pos = len(prompt)``),
  every later step runs only the newest token (``pos = 1``). Self-attention ``hook_k``/``hook_v``
  see only the new positions (the cache holds the rest, already hooked); ``hook_pattern``
  is ``[batch, head, 1, n_tokens_so_far]``. Cross-attention keys/values are computed, and
  their hooks fire, once, on the first step; a patch applied there persists for the whole
  transcript because the cache holds the patched values. Encoder hooks fire once.
* ``use_cache=False``: every step reruns the decoder on the full sequence so far, so each
  hook sees every position at every step (cost grows quadratically with length). The
  encoder still runs once.
* Beam search (``num_beams=k`` / ``beam_size=k``): the decoder's batch holds ``batch * k`` rows,
  row ``b * k + j`` is beam ``j`` of item ``b``; after each step the cache rows follow their
  beams. Sampling with ``best_of=n`` runs ``batch * n`` rows.
* ``transcribe`` runs one decoding per long-form window and per fallback retry; every hook
  stays attached through all of them (``model.hooks(...)`` and patching contexts need no
  change). ``model.decoding_state`` (:class:`~hooked_asr.models.decoding.DecodingState`) says
  which window, seek, temperature, retry and step is running, read from inside a hook.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule

from hooked_asr.config import ModelConfig
from hooked_asr.hooks import unknown_hook_message
from hooked_asr.models.tl_compat import TLCompatMixin
from hooked_asr.models.decoding.memory import check_decoding_memory
from hooked_asr.models.decoding.options import check_generate_args
from hooked_asr.models.decoding.results import GenerationOutput, Segment, TranscriptionResult, WordTiming
from hooked_asr.components.products import decoding_products
from hooked_asr.models.decoding.prefix import PrefixRecorder, PrefixStepper, PrefixUse, check_prefix_use
from hooked_asr.models.decoding.search import LogitRules, Stepper, any_hook, beam_search, openai_beam_search, sample
from hooked_asr.models.decoding.state import DecodingState
from hooked_asr.models.decoding.timestamps import TimestampRules
from hooked_asr.models.decoding.transcription import PromptGroup, TranscriptionMixin


@dataclass
class TeacherForcedInputs:
    """Everything one teacher-forced forward needs: ``logits = model(**inputs.kwargs)``.

    ``tokens`` is the decoder's whole sequence ``[batch, pos]`` (prompt, then the
    continuation). Position ``prompt_len - 1 + i`` of the logits predicts continuation
    token ``i``, so ``logits[:, prompt_len - 1 : -1]`` scores the continuation.
    """

    kwargs: dict[str, Any]
    tokens: Int[torch.Tensor, "batch pos"]
    prompt_len: int


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model supports beyond the API every model has; declared per class
    (``HookedWhisper.capabilities``), read by methods instead of probing signatures.

    A method that needs a capability calls :meth:`HookedEncoderDecoder.require`, which names
    the model, the capability and what to do instead; a speed path that a model lacks is
    skipped (the slow path gives the same numbers).
    """

    # encode(resid, start_at_layer=l) runs encoder blocks l.. from encoder.blocks.{l}.hook_resid_pre;
    # forward / generate(encoder_hidden_states=) reuse an encoder output.
    resume_at_block: bool = True
    # encode(resid, start_at_layer=l, attn_z=z): block l starts after its attention, from attn.hook_z.
    resume_at_head: bool = True
    # decoding.generate_from_prefix shares a clean run's decoder prefix (decoding/prefix.py)
    # and decode(past_key_values=) reuses the clean cross-attention keys/values: needs cross-attention.
    prefix_sharing: bool = False
    # The decoder predicts timestamp tokens (transcribe(without_timestamps=False), segments' times).
    timestamps: bool = False
    # transcribe(word_timestamps=True): DTW over the alignment heads' cross-attention.
    word_timestamps: bool = False
    # How transcribe reads audio longer than one window: "seek" (openai-whisper's loop, a window
    # starts where the last timestamp ended) or "chunks" (fixed windows, cut before decoding).
    long_form: str = "chunks"
    # The keyword inputs encode() takes besides the residual (prepare_features' keys).
    encode_inputs: tuple[str, ...] = ("input_features",)


class HookedEncoderDecoder(TLCompatMixin, TranscriptionMixin, HookedRootModule, ABC):
    """Shared machinery: hook-name validation, and the one decoding core (greedy, sampling,
    beam search, timestamps, temperature fallback, long-form windows, word timings) with
    every hook live.

    The model-agnostic API that methods (lens, patching, probing, SAE) use:
    ``prepare_features(audio)``, ``teacher_forced_inputs(audio, continuation)``,
    ``encode(features, stop_at_layer)`` (what the decoder reads when ``stop_at_layer`` is None),
    ``finish_encoder(resid)``, ``generate(features, prompt_ids, encoder_hidden_states=...)``,
    ``results_from_generation(gen, prompt)``, ``transcribe(audio)``, ``stop_token_ids()``,
    ``generation_kwargs()``, ``decoding_state``, ``device``, ``decoder.ln_final`` and
    ``decoder.unembed``, ``n_layers``, ``tokenizer``.

    Model-specific pieces a subclass provides: ``_generation_context`` (run the encoder once),
    ``_decode_step`` (one decoder call), ``_select_context`` (rows of that context),
    ``_window_prompt`` (the prompt of one window), ``_prompt_groups`` (short-form batching),
    ``_short_form_features`` / ``_window_samples`` (features and how much audio one window reads).
    """

    cfg: ModelConfig
    capabilities: ModelCapabilities = ModelCapabilities()
    _decoding_state: DecodingState | None = None
    # Set for one generate call by decoding.prefix's generate_recording_prefix / generate_from_prefix
    # (sweeps only), so generate's own arguments stay the ones users decode with.
    _prefix_use: PrefixUse | None = None
    default_max_new_tokens: int | None = None  # None: up to the decoder's context

    # ---- the parts each model provides ------------------------------------------------
    @abstractmethod
    def prepare_features(
        self, audio: Any, sampling_rate: int | None = None, allow_silence: bool = False
    ) -> dict[str, torch.Tensor]:
        """Audio (path, array, list, or ready features) -> the encoder's keyword inputs
        (``{"input_features": ...}`` plus any mask)."""

    @abstractmethod
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
        """Inputs for one forward over the prompt followed by ``continuation`` tokens."""

    @abstractmethod
    def finish_encoder(self, resid: Float[torch.Tensor, "batch frame d_model"], **feature_kwargs: Any) -> torch.Tensor:
        """What follows the encoder blocks (final norm; Qwen2-Audio also pools and projects):
        turns ``encoder.blocks.{l}.hook_resid_post`` into what the decoder reads. The encoder lens
        is ``finish_encoder(encode(features, stop_at_layer=l + 1))``."""

    @abstractmethod
    def _generation_context(self, input_features: torch.Tensor, **kwargs: Any) -> Any:
        """Run the encoder once; returns whatever ``_decode_step`` needs."""

    @abstractmethod
    def _decode_step(
        self, context: Any, input_ids: torch.Tensor, past_kv: Any
    ) -> tuple[Float[torch.Tensor, "batch pos d_vocab"], Any]:
        """Decoder logits for ``input_ids`` (the new tokens if ``past_kv`` is given, else all)."""

    def _select_context(self, context: Any, rows: torch.Tensor) -> Any:
        """The context of batch rows ``rows`` (beams and ``best_of`` samples repeat items)."""
        return context.index_select(0, rows.to(context.device))

    @abstractmethod
    def _window_prompt(self, language: str | None, task: str, timestamps: bool, previous: Sequence[int]) -> list[int]:
        """The prompt of one window; ``previous``: earlier text to condition on."""

    def _no_speech_query(self, prompt: Sequence[int]) -> tuple[int, int] | None:
        """``(position, token)`` whose probability at the first step is ``no_speech_prob``."""
        return None

    def _always_suppressed(self) -> list[int]:
        """Ids never generated by ``transcribe`` whatever ``suppress_tokens`` says."""
        return []

    def _check_language_task(self, language: str | None, task: str) -> None:
        """Refuse a language/task this checkpoint cannot do."""

    def _add_word_timestamps(self, segments: list[Segment], **kwargs: Any) -> float:
        raise ValueError(
            f"word_timestamps=True needs a decoder with cross-attention (Whisper); {type(self).__name__} has none"
        )

    # ---- hook names -------------------------------------------------------------------
    @property
    def n_layers(self) -> dict[str, int]:
        return {"encoder": self.cfg.encoder.n_layers, "decoder": self.cfg.decoder.n_layers}

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there)."""
        return self.decoder.W_E.device

    @property
    def decoding_state(self) -> DecodingState | None:
        """The running decoding (window, seek, temperature, retry, step, num_beams), or None."""
        return self._decoding_state

    def require(self, capability: str, needed_for: str) -> None:
        """Raise ``NotImplementedError`` naming the model and the fix when ``capability`` (a field
        of :class:`ModelCapabilities`) is missing, e.g. ``require("prefix_sharing", "generate_from_prefix")``."""
        if not hasattr(self.capabilities, capability):
            raise ValueError(f"unknown capability {capability!r}; one of {list(vars(self.capabilities))}")
        if not getattr(self.capabilities, capability):
            have = [k for k, v in vars(self.capabilities).items() if v is True]
            raise NotImplementedError(
                f"{needed_for} needs {capability!r}, which {type(self).__name__} does not support "
                f"(it supports {have}; see {type(self).__name__}.capabilities)"
            )

    def check_hook_name(self, name: str) -> None:
        """Raise ``KeyError`` with the valid range when ``name`` is not a hook of this model."""
        if name not in self.hook_dict:
            raise KeyError(unknown_hook_message(name, self.hook_dict, self.n_layers))

    def add_hook(self, name, hook, dir="fwd", is_permanent=False, level=None, prepend=False) -> None:  # type: ignore[override]
        if isinstance(name, str):
            self.check_hook_name(name)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def _enable_hook_with_name(self, name: str, hook: Callable, dir) -> None:  # type: ignore[override]
        self.check_hook_name(name)
        super()._enable_hook_with_name(name, hook, dir)

    def _check_names_filter(self, names_filter: Any) -> None:
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        if isinstance(names, (list, tuple)):
            for n in names:
                self.check_hook_name(n)

    def add_caching_hooks(self, names_filter=None, *args, **kwargs):  # type: ignore[override]
        self._check_names_filter(names_filter)
        return super().add_caching_hooks(names_filter, *args, **kwargs)

    def get_caching_hooks(self, names_filter=None, *args, **kwargs):  # type: ignore[override]
        self._check_names_filter(names_filter)
        return super().get_caching_hooks(names_filter, *args, **kwargs)

    # ---- generation ------------------------------------------------------------------
    def stop_token_ids(self) -> list[int]:
        """Ids that end a transcript; generation stops at the first."""
        return [int(self.cfg.eos_token_id)]

    def generation_kwargs(self) -> dict[str, Any]:
        """What ``transcribe`` passes to ``generate`` by default beyond the features and prompt,
        so that a method's own ``generate`` call decodes exactly as ``transcribe`` does."""
        always = self._always_suppressed()
        return {
            "eos_token_id": self.stop_token_ids()[0],
            "suppress_tokens": sorted(set(self.cfg.suppress_tokens) | set(always)),
            "begin_suppress_tokens": sorted(set(self.cfg.begin_suppress_tokens) | set(always)),
        }

    def _timestamp_rules(self, eos: int, max_initial_timestamp_index: int | None) -> TimestampRules:
        if self.cfg.no_timestamps_token_id is None:
            raise ValueError(f"return_timestamps=True needs timestamp tokens; {type(self).__name__} has none")
        return TimestampRules(
            self.cfg.no_timestamps_token_id + 1, self.cfg.no_timestamps_token_id, eos, max_initial_timestamp_index
        )

    @torch.no_grad()
    @decoding_products()
    def generate(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        prompt_ids: Sequence[int] | Int[torch.Tensor, "batch prompt"],
        *,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        return_timestamps: bool = False,
        use_cache: bool = True,
        suppress_tokens: Sequence[int] | None = None,
        begin_suppress_tokens: Sequence[int] | None = None,
        eos_token_id: int | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        length_penalty: float | None = 1.0,
        patience: float | None = None,
        beam_algorithm: str = "huggingface",
        max_initial_timestamp_index: int | None = 50,
        generator: torch.Generator | None = None,
        max_length: int | None = None,
        **feature_kwargs: Any,
    ) -> GenerationOutput:
        """Decode ``prompt_ids`` onward with every hook live at every step (Hugging Face names).

        At each step ``t`` the scores ``s_t`` are the last position's logits with ``-inf`` at
        ``suppress_tokens`` (default: the config's), also at ``begin_suppress_tokens`` on the first
        step, and Whisper's timestamp rules when ``return_timestamps``. ``num_beams=1``:
        ``token_t = argmax s_t`` (or ``~ softmax(s_t / temperature)`` with ``do_sample``),
        ``logprob_t = log_softmax(s_t)[token_t]``. ``num_beams > 1``: ``beam_algorithm="huggingface"`` is Hugging Face's beam search
        (``length_penalty`` an exponent, ``patience``), token for token HF's ``num_beams``;
        ``"openai"`` is openai-whisper's ``BeamSearchDecoder`` + ``MaximumLikelihoodRanker``
        (``length_penalty`` None or GNMT's alpha in [0, 1]), what ``transcribe`` runs
        (see :mod:`hooked_asr.models.decoding.search`). Stops
        when every row has produced ``eos_token_id`` or after ``max_new_tokens`` (default: the
        rest of the decoder's context). ``encoder_hidden_states`` replaces the encoder's output
        (what :meth:`encode` returns; the features still give the batch size and any mask).

        Sweeps that patch many rows of one audio share the clean run's decoder prefix through
        :func:`~hooked_asr.models.decoding.generate_recording_prefix` and
        :func:`~hooked_asr.models.decoding.generate_from_prefix`, which call this method.
        """
        device = input_features.device
        batch = input_features.shape[0]
        prompt = torch.as_tensor(prompt_ids, device=device, dtype=torch.long)
        if prompt.ndim == 1:
            prompt = prompt.expand(batch, -1)
        if prompt.shape[0] != batch:
            raise ValueError(f"prompt_ids has {prompt.shape[0]} rows for a batch of {batch} audio inputs")
        check_generate_args(num_beams, max_new_tokens, do_sample, temperature, length_penalty, patience)
        if beam_algorithm not in ("huggingface", "openai"):
            raise ValueError(
                f"beam_algorithm={beam_algorithm!r}: 'huggingface' (HF generate's) or 'openai' "
                "(openai-whisper's, what transcribe runs)"
            )
        eos = self.cfg.eos_token_id if eos_token_id is None else eos_token_id
        suppress = list(self.cfg.suppress_tokens if suppress_tokens is None else suppress_tokens)
        begin = list(self.cfg.begin_suppress_tokens if begin_suppress_tokens is None else begin_suppress_tokens)
        limit = max_length or self.cfg.decoder.n_ctx
        room = limit - prompt.shape[1]
        if room <= 0:
            raise ValueError(f"the prompt has {prompt.shape[1]} tokens; the decoder reads at most {limit}")
        max_new_tokens = room if max_new_tokens is None else min(max_new_tokens, room)
        # One audio's beams read one copy of it unless a hook makes every beam run its own (Stepper).
        shared = batch == 1 and num_beams > 1 and use_cache and not any_hook(self)
        check_decoding_memory(self, batch, num_beams, prompt.shape[1] + max_new_tokens, device, shared_audio=shared)
        ts = None
        if return_timestamps:
            ts = self._timestamp_rules(eos, max_initial_timestamp_index)
            if int(prompt[0, -1]) == ts.no_timestamps:
                raise ValueError(
                    "return_timestamps=True with a prompt ending in <|notimestamps|>: drop that token "
                    "(model.sot_sequence(..., timestamps=True))"
                )
        rules = LogitRules.build(self.cfg.decoder.d_vocab, device, suppress, begin, ts)
        use = self._prefix_use or PrefixUse()
        clean_prefix, start_at_layer = use.prefix, use.start_at_layer
        if clean_prefix is not None:
            self.require("prefix_sharing", "generate_from_prefix")
            check_prefix_use(self, clean_prefix, prompt, start_at_layer or 0, num_beams, use_cache)
        recorder = None
        if use.record:
            if batch != 1 or num_beams != 1 or not use_cache:
                raise ValueError(
                    "generate_recording_prefix records one clean row: batch 1, num_beams=1, use_cache=True"
                )
            recorder = PrefixRecorder(self.cfg.decoder.n_layers)

        own_state = self._decoding_state is None
        state = DecodingState() if own_state else self._decoding_state
        state.num_beams, state.rows, state.step = num_beams, batch * num_beams, 0
        if own_state:
            state.temperature = temperature if do_sample else 0.0
            self._decoding_state = state
        try:
            if clean_prefix is not None and encoder_hidden_states is None:  # the rows read the clean audio
                context = clean_prefix.context.expand(batch, *clean_prefix.context.shape[1:])
            else:
                context = self._generation_context(
                    input_features, encoder_hidden_states=encoder_hidden_states, **feature_kwargs
                )
            no_speech = self._no_speech_query(prompt[0].tolist())
            if num_beams > 1:
                rows = torch.arange(batch, device=device).repeat_interleave(num_beams)
                stepper = Stepper(self, self._select_context(context, rows), use_cache, group=num_beams)
                if beam_algorithm == "openai":
                    if do_sample:
                        raise ValueError(
                            "beam_algorithm='openai' is deterministic: openai-whisper samples with "
                            "best_of instead of sampled beams"
                        )
                    return openai_beam_search(
                        stepper,
                        prompt.index_select(0, rows),
                        rules,
                        eos=eos,
                        max_new_tokens=max_new_tokens,
                        beam_size=num_beams,
                        patience=patience,
                        length_penalty=length_penalty,
                        state=state,
                        no_speech=no_speech,
                    )
                return beam_search(
                    stepper,
                    prompt.index_select(0, rows),
                    rules,
                    eos=eos,
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    length_penalty=1.0 if length_penalty is None else length_penalty,
                    patience=patience,
                    do_sample=do_sample,
                    temperature=temperature,
                    generator=generator,
                    state=state,
                    no_speech=no_speech,
                )
            stepper = (
                Stepper(self, context, use_cache)
                if clean_prefix is None
                else PrefixStepper(self, context, clean_prefix, start_at_layer or 0, batch)
            )
            with self.hooks(fwd_hooks=recorder.hooks()) if recorder else contextlib.nullcontext():
                out = sample(
                    stepper,
                    prompt,
                    rules,
                    eos=eos,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature,
                    generator=generator,
                    state=state,
                    no_speech=no_speech,
                )
            if recorder is not None:
                out.prefix_cache = recorder.build(out.sequences, prompt.shape[1], stepper.cache, context)
            return out
        finally:
            if own_state:
                self._decoding_state = None

    def results_from_generation(
        self,
        gen: GenerationOutput,
        prompt: Sequence[int] | torch.Tensor,
        *,
        language: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[TranscriptionResult]:
        """THE cut-at-end-of-text and decode: one :class:`TranscriptionResult` per row of ``gen``.

        A row's tokens stop before the first of :meth:`stop_token_ids`; ``finished`` says a stop
        id was reached; ``extra["sum_logprob"]`` is openai-whisper's ``sum_logprob`` (the stop token's
        log-prob included); ``text`` is the tokenizer's decoding (special tokens dropped), stripped."""
        stop_ids = self.stop_token_ids()
        stops = set(stop_ids)
        tok = getattr(self, "tokenizer", None)
        prompts = prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)
        out = []
        for row in range(gen.tokens.shape[0]):
            toks, lps = gen.tokens[row].tolist(), gen.logprobs[row].tolist()
            cut = next((j for j, t in enumerate(toks) if t in stops), None)
            # openai-whisper's sum_logprob counts the end of text; a beam search reports its own float32 sum
            total = (
                float(gen.sum_logprobs[row])
                if gen.sum_logprobs is not None
                else sum(lps[: None if cut is None else cut + 1])
            )
            # a row padded with end of text after an unfinished beam did not finish
            finished = cut is not None and (toks[cut] != stop_ids[0] or bool(gen.finished[row]))
            if cut is not None:
                toks, lps = toks[:cut], lps[:cut]
            text = tok.decode(toks).strip() if tok is not None else None
            p = prompts[row] if prompts and isinstance(prompts[0], list) else prompts
            out.append(
                TranscriptionResult(
                    text=text,
                    tokens=toks,
                    token_logprobs=lps,
                    prompt=[int(x) for x in p],
                    finished=finished,
                    language=language,
                    extra=dict(extra or {}) | {"sum_logprob": total},
                )
            )
        return out

    # ---- loading ---------------------------------------------------------------------
    def _load_pieces(
        self, pieces: Iterable[dict[str, torch.Tensor]], device: str | torch.device
    ) -> "HookedEncoderDecoder":
        """The one weight validator: assign converted tensors piece by piece into a meta-device
        model, checking every key, shape and that every tensor the model has was given."""
        from hooked_asr.components.attention import RotaryEmbedding
        from hooked_asr.loading.whisper_weights import WeightConversionError

        own = {k: v.shape for k, v in self.state_dict().items()}
        seen: set[str] = set()
        for piece in pieces:
            bad = [k for k in piece if k not in own]
            if bad:
                raise WeightConversionError(f"converted keys the model does not have: {sorted(bad)[:5]}")
            wrong = [
                f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k])}"
                for k, v in piece.items()
                if v.shape != own[k]
            ]
            if wrong:
                raise WeightConversionError("checkpoint does not fit the config: " + "; ".join(wrong[:5]))
            self.load_state_dict(piece, strict=False, assign=True)
            seen |= set(piece)
        missing = sorted(set(own) - seen)
        if missing:
            raise WeightConversionError(
                f"checkpoint does not fit the config: it lacks {len(missing)} tensors, e.g. {missing[:5]}"
            )
        for m in self.modules():
            if isinstance(m, RotaryEmbedding):
                m.reset_frequencies(device)
        return self.eval()


__all__ = ["HookedEncoderDecoder", "ModelCapabilities", "TeacherForcedInputs"]
