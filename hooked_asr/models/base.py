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

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule

from hooked_asr.config import ModelConfig
from hooked_asr.hooks import unknown_hook_message
from hooked_asr.models.tl_compat import TLCompatMixin
from hooked_asr.models.decoding.fallback import WindowResult, decode_with_fallback
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.results import GenerationOutput, Segment, TranscriptionResult, WordTiming
from hooked_asr.models.decoding.search import LogitRules, Stepper, beam_search, sample
from hooked_asr.models.decoding.state import DecodingState
from hooked_asr.models.decoding.timestamps import TimestampRules, split_segments

SAMPLE_RATE = 16000


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


@dataclass
class PromptGroup:
    """Short-form items that share one prompt (same language / same number of audio tokens)."""

    prompt: list[int]
    rows: list[int]
    language: str | None
    extra: dict[str, Any]


class HookedEncoderDecoder(TLCompatMixin, HookedRootModule, ABC):
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
    _decoding_state: DecodingState | None = None
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
        self, audio: Any, continuation: Sequence[int] = (), *, language: str | None = None, task: str = "transcribe",
        sampling_rate: int | None = None, allow_silence: bool = False,
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
        return TimestampRules(self.cfg.no_timestamps_token_id + 1, self.cfg.no_timestamps_token_id, eos,
                              max_initial_timestamp_index)

    @torch.no_grad()
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
        length_penalty: float = 1.0,
        patience: float | None = None,
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
        ``logprob_t = log_softmax(s_t)[token_t]``. ``num_beams > 1``: Hugging Face's beam search
        (``length_penalty``, ``patience``; see :mod:`hooked_asr.models.decoding.search`). Stops
        when every row has produced ``eos_token_id`` or after ``max_new_tokens`` (default: the
        rest of the decoder's context). ``encoder_hidden_states`` replaces the encoder's output
        (what :meth:`encode` returns; the features still give the batch size and any mask).
        """
        device = input_features.device
        batch = input_features.shape[0]
        prompt = torch.as_tensor(prompt_ids, device=device, dtype=torch.long)
        if prompt.ndim == 1:
            prompt = prompt.expand(batch, -1)
        if prompt.shape[0] != batch:
            raise ValueError(f"prompt_ids has {prompt.shape[0]} rows for a batch of {batch} audio inputs")
        if num_beams < 1:
            raise ValueError(f"num_beams={num_beams}: must be >= 1")
        if max_new_tokens is not None and max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be a positive number of tokens")
        eos = self.cfg.eos_token_id if eos_token_id is None else eos_token_id
        suppress = list(self.cfg.suppress_tokens if suppress_tokens is None else suppress_tokens)
        begin = list(self.cfg.begin_suppress_tokens if begin_suppress_tokens is None else begin_suppress_tokens)
        limit = max_length or self.cfg.decoder.n_ctx
        room = limit - prompt.shape[1]
        if room <= 0:
            raise ValueError(f"the prompt has {prompt.shape[1]} tokens; the decoder reads at most {limit}")
        max_new_tokens = room if max_new_tokens is None else min(max_new_tokens, room)
        ts = None
        if return_timestamps:
            ts = self._timestamp_rules(eos, max_initial_timestamp_index)
            if int(prompt[0, -1]) == ts.no_timestamps:
                raise ValueError("return_timestamps=True with a prompt ending in <|notimestamps|>: drop that token "
                                 "(model.sot_sequence(..., timestamps=True))")
        rules = LogitRules.build(self.cfg.decoder.d_vocab, device, suppress, begin, ts)

        own_state = self._decoding_state is None
        state = DecodingState() if own_state else self._decoding_state
        state.num_beams, state.rows, state.step = num_beams, batch * num_beams, 0
        if own_state:
            state.temperature = temperature if do_sample else 0.0
            self._decoding_state = state
        try:
            context = self._generation_context(input_features, encoder_hidden_states=encoder_hidden_states, **feature_kwargs)
            no_speech = self._no_speech_query(prompt[0].tolist())
            if num_beams > 1:
                rows = torch.arange(batch, device=device).repeat_interleave(num_beams)
                stepper = Stepper(self, self._select_context(context, rows), use_cache)
                return beam_search(
                    stepper, prompt.index_select(0, rows), rules, eos=eos, max_new_tokens=max_new_tokens,
                    num_beams=num_beams, length_penalty=length_penalty, patience=patience, do_sample=do_sample,
                    temperature=temperature, generator=generator, state=state, no_speech=no_speech,
                )
            return sample(
                Stepper(self, context, use_cache), prompt, rules, eos=eos, max_new_tokens=max_new_tokens,
                do_sample=do_sample, temperature=temperature, generator=generator, state=state, no_speech=no_speech,
            )
        finally:
            if own_state:
                self._decoding_state = None

    def results_from_generation(
        self, gen: GenerationOutput, prompt: Sequence[int] | torch.Tensor, *, language: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[TranscriptionResult]:
        """THE cut-at-end-of-text and decode: one :class:`TranscriptionResult` per row of ``gen``.

        A row's tokens stop before the first of :meth:`stop_token_ids`; ``finished`` says a stop
        id was reached; ``text`` is the tokenizer's decoding (special tokens dropped), stripped."""
        stops = set(self.stop_token_ids())
        tok = getattr(self, "tokenizer", None)
        prompts = prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)
        out = []
        for row in range(gen.tokens.shape[0]):
            toks, lps = gen.tokens[row].tolist(), gen.logprobs[row].tolist()
            cut = next((j for j, t in enumerate(toks) if t in stops), None)
            if cut is not None:
                toks, lps = toks[:cut], lps[:cut]
            text = tok.decode(toks).strip() if tok is not None else None
            p = prompts[row] if prompts and isinstance(prompts[0], list) else prompts
            out.append(TranscriptionResult(
                text=text, tokens=toks, token_logprobs=lps, prompt=[int(x) for x in p], finished=cut is not None,
                language=language, extra=dict(extra or {}),
            ))
        return out

    # ---- transcription ---------------------------------------------------------------
    def transcribe(
        self,
        audio: Any,
        *,
        language: str | None = None,
        task: str = "transcribe",
        temperature: float | Sequence[float] = 0.0,
        beam_size: int | None = None,
        best_of: int | None = None,
        patience: float | None = None,
        length_penalty: float | None = None,
        compression_ratio_threshold: float | None = 2.4,
        logprob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        condition_on_previous_text: bool = True,
        initial_prompt: str | Sequence[int] | None = None,
        word_timestamps: bool = False,
        without_timestamps: bool | None = None,
        suppress_tokens: str | Sequence[int] | None = "-1",
        suppress_blank: bool = True,
        max_new_tokens: int | None = None,
        sampling_rate: int | None = None,
        allow_silence: bool = False,
        use_cache: bool = True,
        progress: bool | None = None,
        _model_options: dict[str, Any] | None = None,
    ) -> TranscriptionResult | list[TranscriptionResult]:
        """Transcribe audio of any length with every hook live (openai-whisper's options).

        ``audio``: a path (wav/flac/ogg), a 1-D float array at ``sampling_rate`` (16 kHz if not
        given), a list of those (returns a list), or log-mel features ``[batch, n_mels, frames]``
        (returns a list). Audio up to one window (30 s) is decoded as one batch; longer audio
        window by window (:mod:`hooked_asr.models.decoding.longform`), with a progress bar.

        Defaults: greedy at temperature 0, no timestamps for audio up to 30 s (timestamps on for
        long-form, which seeks by them). ``temperature`` as a tuple turns on fallback
        (``compression_ratio_threshold``, ``logprob_threshold``, ``no_speech_threshold``);
        ``beam_size`` beam search at temperature 0, ``best_of`` samples above it;
        ``word_timestamps`` fills ``result.words``. ``allow_silence`` lets silent audio through
        (to study hallucinations on it). See docs/decoding.md for every option and how it
        differs from openai-whisper / faster-whisper / Hugging Face.
        """
        self._check_language_task(language, task)
        opts = TranscribeOptions(
            language=language, task=task, temperature=temperature, beam_size=beam_size, best_of=best_of,
            patience=patience, length_penalty=length_penalty, compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text, initial_prompt=initial_prompt,
            word_timestamps=word_timestamps, without_timestamps=without_timestamps, suppress_tokens=suppress_tokens,
            suppress_blank=suppress_blank, max_new_tokens=max_new_tokens, use_cache=use_cache, progress=progress,
            model_options=dict(_model_options or {}),
        )
        items, is_batch = self._transcription_inputs(audio, sampling_rate, allow_silence)
        window = self._window_samples()
        results: dict[int, TranscriptionResult] = {}
        state = DecodingState()
        self._decoding_state = state
        try:
            if isinstance(items, dict):  # ready features: one window per item
                short = list(range(items["input_features"].shape[0]))
                results.update(self._transcribe_short(items, [None] * len(short), short, opts))
            else:
                short = [i for i, w in enumerate(items) if w.size <= window]
                if short:
                    feats = self._short_form_features([items[i] for i in short])
                    results.update(self._transcribe_short(feats, [items[i].size for i in short], short, opts))
                for i, w in enumerate(items):
                    if w.size > window:
                        results[i] = self._transcribe_long(w, opts)
        finally:
            self._decoding_state = None
        out = [results[i] for i in range(len(results))]
        return out if is_batch else out[0]

    def _transcription_inputs(
        self, audio: Any, sampling_rate: int | None, allow_silence: bool
    ) -> tuple[list[np.ndarray] | dict[str, torch.Tensor], bool]:
        """Waveforms (16 kHz float32, any length) or, for a feature tensor, the features dict."""
        from hooked_asr.audio import AudioError, load_audio

        if isinstance(audio, torch.Tensor) and audio.ndim == 3:
            return self.prepare_features(audio), True
        is_batch = isinstance(audio, (list, tuple))
        items = list(audio) if is_batch else [audio]
        if not items:
            raise AudioError("an empty list of audio was passed")
        return [load_audio(a, sampling_rate, allow_long=True, allow_silence=allow_silence) for a in items], is_batch

    def _window_samples(self) -> int:
        """Samples one window reads (30 s for Whisper)."""
        return self.cfg.encoder.n_frames * 160

    def _short_form_features(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return self.prepare_features(waves)

    @abstractmethod
    def _prompt_groups(self, features: dict[str, torch.Tensor], opts: TranscribeOptions) -> list[PromptGroup]:
        """Split a short-form batch into groups that share a prompt."""

    def _initial_tokens(self, opts: TranscribeOptions) -> list[int]:
        p = opts.initial_prompt
        if p is None:
            return []
        if isinstance(p, str):
            if self.tokenizer is None:
                raise ValueError("initial_prompt as text needs a tokenizer; pass token ids instead")
            return list(self.tokenizer.encode(" " + p.strip()))
        return [int(t) for t in p]

    def _decode_rows(
        self, features: dict[str, torch.Tensor], prompt: list[int], temperature: float, opts: TranscribeOptions,
        rows: list[int],
    ) -> list[WindowResult]:
        """Decode rows ``rows`` of ``features`` once at ``temperature``: beam search at 0 when
        ``beam_size``, ``best_of`` samples above 0 (the most likely kept), else greedy."""
        idx = torch.tensor(rows, device=self.device)
        feats = {k: v.index_select(0, idx.to(v.device)) for k, v in features.items()}
        n_samples = (opts.best_of or 1) if temperature > 0 else 1
        if n_samples > 1:
            rep = torch.arange(len(rows), device=self.device).repeat_interleave(n_samples)
            feats = {k: v.index_select(0, rep.to(v.device)) for k, v in feats.items()}
        stops = self.stop_token_ids()
        always = self._always_suppressed()
        suppress = sorted(set(opts.suppress_list(self.cfg.suppress_tokens)) | set(always))
        begin = sorted(set(self.cfg.begin_suppress_tokens if opts.suppress_blank else []) | set(always))
        timestamps = not opts.without_timestamps
        limit = opts.max_new_tokens or self.default_max_new_tokens
        main = feats.pop("input_features")
        gen = self.generate(
            main, prompt, max_new_tokens=limit, num_beams=opts.beam_size if (temperature == 0 and opts.beam_size) else 1,
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
            return_timestamps=timestamps, use_cache=opts.use_cache, suppress_tokens=suppress,
            begin_suppress_tokens=begin, eos_token_id=stops[0],
            length_penalty=1.0 if opts.length_penalty is None else opts.length_penalty, patience=opts.patience,
            **feats,
        )
        stop_set = set(stops)
        out = []
        for row in range(gen.tokens.shape[0]):
            toks, lps = gen.tokens[row].tolist(), gen.logprobs[row].tolist()
            cut = next((j for j, t in enumerate(toks) if t in stop_set), None)
            total = sum(lps[: cut + 1]) if cut is not None else sum(lps)
            if cut is not None:
                toks, lps = toks[:cut], lps[:cut]
            text = self.tokenizer.decode(toks) if self.tokenizer is not None else ""
            nsp = float(gen.no_speech_probs[row]) if gen.no_speech_probs is not None else float("nan")
            out.append(WindowResult(toks, lps, total, text, cut is not None, temperature, nsp))
        if n_samples > 1:  # openai-whisper's ranking: sum log p / length
            out = [max(out[i * n_samples : (i + 1) * n_samples], key=lambda r: r.sum_logprob / max(len(r.tokens), 1))
                   for i in range(len(rows))]
        return out

    def _fallback(self, features: dict[str, torch.Tensor], prompt: list[int], opts: TranscribeOptions,
                  n_rows: int) -> list[WindowResult]:
        return decode_with_fallback(
            lambda rows, t: self._decode_rows(features, prompt, t, opts, rows), n_rows, opts.temperature,
            compression_ratio_threshold=opts.compression_ratio_threshold, logprob_threshold=opts.logprob_threshold,
            no_speech_threshold=opts.no_speech_threshold, state=self._decoding_state,
        )

    def _transcribe_short(
        self, features: dict[str, torch.Tensor], n_samples: list[int | None], items: list[int], opts: TranscribeOptions,
    ) -> dict[int, TranscriptionResult]:
        """One batch of single-window items: grouped by prompt, decoded with fallback, no seeking."""
        if opts.without_timestamps is None:
            opts = _replace(opts, without_timestamps=True)
        out: dict[int, TranscriptionResult] = {}
        n_frames = features["input_features"].shape[-1]
        for g in self._prompt_groups(features, opts):
            idx = torch.tensor(g.rows, device=self.device)
            feats = {k: v.index_select(0, idx.to(v.device)) for k, v in features.items()}
            for row, r in zip(g.rows, self._fallback(feats, g.prompt, opts, len(g.rows))):
                n = n_samples[row]
                frames = n_frames if n is None else min(n_frames, -(-n // 160))
                res = TranscriptionResult(
                    text=r.text.strip() if self.tokenizer is not None else None, tokens=r.tokens,
                    token_logprobs=r.logprobs, prompt=g.prompt, finished=r.finished, language=g.language,
                    segments=self._segments(r, frames), extra=dict(g.extra),
                )
                if opts.word_timestamps:
                    self._add_word_timestamps(
                        res.segments, time_offset=0.0, last_speech_timestamp=0.0,
                        input_features=features["input_features"][row : row + 1], num_frames=frames,
                        language=g.language, task=opts.task,
                    )
                    res.words = [w for s in res.segments for w in (s.words or [])]
                out[items[row]] = res
        return out

    def _segments(self, r: WindowResult, frames: int, seek: int = 0) -> list[Segment]:
        """A short-form window's segments: cut at timestamp pairs when there are any, else one."""
        tb = self.cfg.no_timestamps_token_id + 1 if self.cfg.no_timestamps_token_id is not None else None
        cuts = split_segments(r.tokens, tb)[0] if tb is not None else [(0, len(r.tokens), 0.0, float("nan"))]
        segs = []
        eos = self.cfg.eos_token_id
        for a, b, start, end in cuts:
            toks = r.tokens[a:b]
            text = self.tokenizer.decode([t for t in toks if t < eos or tb is None]) if self.tokenizer is not None else ""
            segs.append(Segment(
                id=len(segs), seek=seek, start=start, end=frames * 0.01 if end != end else end, text=text, tokens=toks,
                avg_logprob=r.avg_logprob, compression_ratio=r.compression_ratio, no_speech_prob=r.no_speech_prob,
                temperature=r.temperature,
            ))
        return segs

    def _transcribe_long(self, wave: np.ndarray, opts: TranscribeOptions) -> TranscriptionResult:
        """Audio longer than one window (Whisper: sequential windows, see ``decoding.longform``)."""
        raise NotImplementedError(f"{type(self).__name__} has no long-form transcription")

    # ---- loading ---------------------------------------------------------------------
    def _load_pieces(self, pieces: Iterable[dict[str, torch.Tensor]], device: str | torch.device) -> "HookedEncoderDecoder":
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
            wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k])}" for k, v in piece.items() if v.shape != own[k]]
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


def _replace(opts: TranscribeOptions, **changes: Any) -> TranscribeOptions:
    import dataclasses

    return dataclasses.replace(opts, **changes)


__all__ = [
    "GenerationOutput", "HookedEncoderDecoder", "PromptGroup", "Segment", "TeacherForcedInputs",
    "TranscriptionResult", "WordTiming",
]
