"""``transcribe``: the model-agnostic transcription driver of the decoding core (a mixin of
:class:`~hooked_asr.models.base.HookedEncoderDecoder`).

Short-form items (up to one window) are grouped by prompt and decoded as one batch with
temperature fallback; longer items go to the model's ``_transcribe_long`` (Whisper:
:mod:`hooked_asr.models.decoding.longform`). The model provides ``generate``,
``_prompt_groups``, ``_window_prompt``, ``_short_form_features`` and the token rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hooked_asr.audio import MEL_FRAME_SECONDS, audio_frames, window_samples
from hooked_asr.models.decoding.fallback import WindowResult, decode_with_fallback
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.results import Segment, TranscriptionResult
from hooked_asr.models.decoding.search import rank_sequences
from hooked_asr.models.decoding.state import DecodingState
from hooked_asr.models.decoding.timestamps import split_segments
from hooked_asr.models.decoding.timing import (
    APPEND_PUNCTUATIONS,
    PREPEND_PUNCTUATIONS,
    encoder_row,
    keep_encoder_output,
)


@dataclass
class PromptGroup:
    """Short-form items that share one prompt (same language / same number of audio tokens)."""

    prompt: list[int]
    rows: list[int]
    language: str | None
    extra: dict[str, Any]


class TranscriptionMixin:
    """``transcribe`` and its steps; see :class:`~hooked_asr.models.base.HookedEncoderDecoder`."""

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
        prompt_reset_on_temperature: float = 0.5,
        initial_prompt: str | Sequence[int] | None = None,
        carry_initial_prompt: bool = False,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        alignment_heads: str | Sequence[tuple[int, int]] = "detected",
        word_unit: str = "token",
        clip_timestamps: str | Sequence[float] = "0",
        hallucination_silence_threshold: float | None = None,
        without_timestamps: bool | None = None,
        suppress_tokens: str | Sequence[int] | None = "-1",
        suppress_blank: bool = True,
        max_new_tokens: int | None = None,
        sampling_rate: int | None = None,
        allow_silence: bool = False,
        use_cache: bool = True,
        progress: bool | None = None,
    ) -> TranscriptionResult | list[TranscriptionResult]:
        """Transcribe audio of any length with every hook live (openai-whisper's options and names).

        ``audio``: a path (wav/flac/ogg), a 1-D float array at ``sampling_rate`` (16 kHz if not
        given), a list of those (returns a list), or log-mel features ``[batch, n_mels, frames]``
        (returns a list). Audio up to one window (30 s) is decoded as one batch; longer audio
        window by window (:mod:`hooked_asr.models.decoding.longform`), with a progress bar.

        Defaults: greedy at temperature 0, no timestamps for audio up to 30 s (timestamps on for
        long-form, which seeks by them). ``temperature`` as a tuple turns on fallback
        (``compression_ratio_threshold``, ``logprob_threshold``, ``no_speech_threshold``);
        ``beam_size`` is openai-whisper's beam search at temperature 0 (``patience``;
        ``length_penalty`` None ranks by ``sum log p / n``, a value ``alpha`` by GNMT's
        ``sum log p / ((5 + n) / 6) ** alpha``), ``best_of`` samples above it, ranked the same way;
        ``word_timestamps`` fills ``result.words`` (``alignment_heads``: ``"detected"`` ranks the heads
        on each window, ``"openai"`` is the checkpoint's list as openai-whisper / faster-whisper, or
        ``[(layer, head), ...]``; ``word_unit``: ``"token"`` or ``"character"``; see
        :mod:`hooked_asr.models.decoding.alignment`). Long-form only: ``condition_on_previous_text``,
        ``prompt_reset_on_temperature``, ``carry_initial_prompt``, ``clip_timestamps``,
        ``hallucination_silence_threshold`` (openai-whisper's). ``allow_silence`` lets silent audio
        through (to study hallucinations on it). See docs/decoding.md for every option and the
        measured agreement with openai-whisper / faster-whisper / Hugging Face.
        """
        opts = TranscribeOptions(
            language=language,
            task=task,
            temperature=temperature,
            beam_size=beam_size,
            best_of=best_of,
            patience=patience,
            length_penalty=length_penalty,
            compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            prompt_reset_on_temperature=prompt_reset_on_temperature,
            initial_prompt=initial_prompt,
            carry_initial_prompt=carry_initial_prompt,
            word_timestamps=word_timestamps,
            prepend_punctuations=prepend_punctuations,
            append_punctuations=append_punctuations,
            alignment_heads=alignment_heads,
            word_unit=word_unit,
            clip_timestamps=clip_timestamps,
            hallucination_silence_threshold=hallucination_silence_threshold,
            without_timestamps=without_timestamps,
            suppress_tokens=suppress_tokens,
            suppress_blank=suppress_blank,
            max_new_tokens=max_new_tokens,
            use_cache=use_cache,
            progress=progress,
        )
        return self._transcribe(audio, opts, sampling_rate=sampling_rate, allow_silence=allow_silence)

    def _transcribe(
        self,
        audio: Any,
        opts: TranscribeOptions,
        *,
        sampling_rate: int | None,
        allow_silence: bool,
    ) -> TranscriptionResult | list[TranscriptionResult]:
        """``transcribe`` with its options checked (a model's own ``transcribe`` adds ``opts.model_options``)."""
        self._check_language_task(opts.language, opts.task)
        if opts.needs_window_loop:
            self.require("timestamps", "clip_timestamps / hallucination_silence_threshold")
        items, is_batch = self._transcription_inputs(audio, sampling_rate, allow_silence)
        window = self._window_samples()
        results: dict[int, TranscriptionResult] = {}
        state = DecodingState()
        self._decoding_state = state
        try:
            if isinstance(items, dict):  # ready features: one window per item
                if opts.needs_window_loop:
                    raise ValueError(
                        "clip_timestamps / hallucination_silence_threshold work on audio, not on ready "
                        "log-mel features: pass the waveform or a path"
                    )
                short = list(range(items["input_features"].shape[0]))
                results.update(self._transcribe_short(items, [None] * len(short), short, opts))
            else:
                short = [i for i, w in enumerate(items) if w.size <= window and not opts.needs_window_loop]
                if short:
                    feats = self._short_form_features([items[i] for i in short])
                    results.update(self._transcribe_short(feats, [items[i].size for i in short], short, opts))
                for i, w in enumerate(items):
                    if i not in short:
                        results[i] = self._transcribe_long(w, opts)
        finally:
            self._decoding_state = None
        out = [results[i] for i in range(len(results))]
        return out if is_batch else out[0]

    def _transcription_inputs(
        self, audio: Any, sampling_rate: int | None, allow_silence: bool
    ) -> tuple[list[np.ndarray] | dict[str, torch.Tensor], bool]:
        """Waveforms (16 kHz float32, any length) or, for a feature tensor, the features dict."""
        from hooked_asr.audio import AudioError, is_batch_input, load_audio

        if isinstance(audio, torch.Tensor) and audio.ndim == 3:
            return self.prepare_features(audio), True
        is_batch = is_batch_input(audio)
        items = list(audio) if is_batch else [audio]
        if not items:
            raise AudioError("an empty list of audio was passed")
        return [load_audio(a, sampling_rate, allow_long=True, allow_silence=allow_silence) for a in items], is_batch

    def _window_samples(self) -> int:
        """Samples one window reads (30 s for Whisper)."""
        return window_samples(self)

    def _short_form_features(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return self.prepare_features(waves)

    def _prompt_groups(self, features: dict[str, torch.Tensor], opts: TranscribeOptions) -> list[PromptGroup]:
        """Split a short-form batch into groups that share a prompt."""
        raise NotImplementedError

    def _initial_tokens(self, opts: TranscribeOptions) -> list[int]:
        p = opts.initial_prompt
        if p is None:
            return []
        if isinstance(p, str):
            if self.tokenizer is None:
                raise ValueError("initial_prompt as text needs a tokenizer; pass token ids instead")
            return list(self.tokenizer.encode(" " + p.strip(), special=False))  # typed text, never special tokens
        return [int(t) for t in p]

    def _decode_rows(
        self,
        features: dict[str, torch.Tensor],
        prompt: list[int],
        temperature: float,
        opts: TranscribeOptions,
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
            main,
            prompt,
            max_new_tokens=limit,
            num_beams=opts.beam_size if (temperature == 0 and opts.beam_size) else 1,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            return_timestamps=timestamps,
            use_cache=opts.use_cache,
            suppress_tokens=suppress,
            begin_suppress_tokens=begin,
            eos_token_id=stops[0],
            length_penalty=opts.length_penalty,
            patience=opts.patience,
            beam_algorithm="openai",
            # openai-whisper stops once the sequence is longer than the context, so its last token
            # is predicted from the context's last position: one token more than max_length=n_ctx
            max_length=self.cfg.decoder.n_ctx + 1,
            **feats,
        )
        out = []
        for row, res in enumerate(self.results_from_generation(gen, prompt)):
            nsp = float(gen.no_speech_probs[row]) if gen.no_speech_probs is not None else float("nan")
            out.append(
                WindowResult(
                    res.tokens,
                    res.token_logprobs,
                    res.extra["sum_logprob"],
                    res.text or "",
                    res.finished,
                    temperature,
                    nsp,
                )
            )
        if n_samples > 1:  # openai-whisper's MaximumLikelihoodRanker over each item's samples
            groups = [out[i * n_samples : (i + 1) * n_samples] for i in range(len(rows))]
            out = [
                g[rank_sequences([len(r.tokens) for r in g], [r.sum_logprob for r in g], opts.length_penalty)]
                for g in groups
            ]
        return out

    def _fallback(
        self, features: dict[str, torch.Tensor], prompt: list[int], opts: TranscribeOptions, n_rows: int
    ) -> list[WindowResult]:
        return decode_with_fallback(
            lambda rows, t: self._decode_rows(features, prompt, t, opts, rows),
            n_rows,
            opts.temperature,
            compression_ratio_threshold=opts.compression_ratio_threshold,
            logprob_threshold=opts.logprob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            state=self._decoding_state,
        )

    def _transcribe_short(
        self,
        features: dict[str, torch.Tensor],
        n_samples: list[int | None],
        items: list[int],
        opts: TranscribeOptions,
    ) -> dict[int, TranscriptionResult]:
        """One batch of single-window items: grouped by prompt, decoded with fallback, no seeking."""
        if opts.without_timestamps is None:
            opts = _replace(opts, without_timestamps=True)
        out: dict[int, TranscriptionResult] = {}
        n_frames = features["input_features"].shape[-1]
        for g in self._prompt_groups(features, opts):
            idx = torch.tensor(g.rows, device=self.device)
            feats = {k: v.index_select(0, idx.to(v.device)) for k, v in features.items()}
            with keep_encoder_output(self, opts.word_timestamps) as seen:  # word timings reuse the encoder's output
                decoded = self._fallback(feats, g.prompt, opts, len(g.rows))
            for row, r in zip(g.rows, decoded):
                n = n_samples[row]
                frames = n_frames if n is None else audio_frames(n, n_frames, self._window_samples())
                res = TranscriptionResult(
                    text=r.text.strip() if self.tokenizer is not None else None,
                    tokens=r.tokens,
                    token_logprobs=r.logprobs,
                    prompt=g.prompt,
                    finished=r.finished,
                    language=g.language,
                    segments=self._segments(r, frames),
                    extra=dict(g.extra),
                )
                if opts.word_timestamps:
                    self._add_word_timestamps(
                        res.segments,
                        time_offset=0.0,
                        last_speech_timestamp=0.0,
                        input_features=features["input_features"][row : row + 1],
                        num_frames=frames,
                        language=g.language,
                        task=opts.task,
                        options=opts,
                        encoder_hidden_states=encoder_row(seen, g.rows.index(row), len(g.rows)),
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
            text = (
                self.tokenizer.decode([t for t in toks if t < eos or tb is None]) if self.tokenizer is not None else ""
            )
            segs.append(
                Segment(
                    id=len(segs),
                    seek=seek,
                    start=start,
                    end=frames * MEL_FRAME_SECONDS if end != end else end,
                    text=text,
                    tokens=toks,
                    avg_logprob=r.avg_logprob,
                    compression_ratio=r.compression_ratio,
                    no_speech_prob=r.no_speech_prob,
                    temperature=r.temperature,
                )
            )
        return segs

    def _transcribe_long(self, wave: np.ndarray, opts: TranscribeOptions) -> TranscriptionResult:
        """Audio longer than one window (Whisper: sequential windows, see ``decoding.longform``)."""
        raise NotImplementedError(f"{type(self).__name__} has no long-form transcription")


def _replace(opts: TranscribeOptions, **changes: Any) -> TranscribeOptions:
    return dataclasses.replace(opts, **changes)


__all__ = ["PromptGroup", "TranscriptionMixin"]
