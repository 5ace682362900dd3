"""Sequential long-form transcription (openai-whisper's ``transcribe`` loop), one recording.

The log-mel of the whole recording (one normalisation, 30 s of zeros appended) is cut into
30-s windows starting at ``seek`` (mel frames, 100 per second; a short last window is padded
with zeros in the log-mel domain). Each window is decoded with temperature fallback, with
the previous windows' tokens as a ``<|startofprev|>`` prompt (reset after a window decoded
above temperature 0.5, or always when ``condition_on_previous_text=False``). The window's
timestamp pairs cut it into segments; the next window starts at the last complete segment's
end timestamp (or at the window's end when the window ends on a single timestamp or has no
complete segment). A window whose ``no_speech_prob > no_speech_threshold`` with
``avg_logprob < logprob_threshold`` is skipped as silence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hooked_asr.models.decoding.fallback import compression_ratio, decode_with_fallback
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.results import Segment, TranscriptionResult, WordTiming
from hooked_asr.models.decoding.timestamps import split_segments
from hooked_asr.models.decoding.timing import encoder_row, keep_encoder_output

HOP_SECONDS = 0.01  # one mel frame
N_FRAMES = 3000  # mel frames per window
INPUT_STRIDE = 2  # mel frames per timestamp step / encoder frame


def transcribe_sequential(
    model: Any, mel: torch.Tensor, content_frames: int, opts: TranscribeOptions, language: str | None,
    initial_tokens: list[int],
) -> TranscriptionResult:
    """``mel [n_mels, content_frames + padding]`` -> one :class:`TranscriptionResult` over all windows."""
    has_ts = model.cfg.no_timestamps_token_id is not None
    tb = model.cfg.no_timestamps_token_id + 1 if has_ts else model.cfg.decoder.d_vocab
    if opts.without_timestamps is None or not has_ts:  # without timestamp tokens: full-window steps
        opts = dataclasses.replace(opts, without_timestamps=not has_ts or bool(opts.without_timestamps))
    if opts.max_new_tokens is None:  # openai-whisper's sample_len for each window
        opts = dataclasses.replace(opts, max_new_tokens=model.cfg.decoder.n_ctx // 2)
    timestamps = not opts.without_timestamps
    state = model.decoding_state
    seek, window, prompt_reset_since = 0, 0, 0
    all_tokens = list(initial_tokens)
    segments: list[Segment] = []
    kept_tokens: list[int] = []
    kept_lps: list[float] = []
    last_speech = 0.0
    first_prompt: list[int] | None = None
    tok = model.tokenizer
    decode = tok.decode if tok is not None else (lambda ids: "")
    finished = True
    show = opts.progress if opts.progress is not None else content_frames > N_FRAMES
    bar = tqdm(total=content_frames, unit="frames", desc="transcribing windows", disable=not show)
    try:
        while seek < content_frames:
            time_offset = seek * HOP_SECONDS
            size = min(N_FRAMES, content_frames - seek)
            window_mel = F.pad(mel[:, seek : seek + size], (0, N_FRAMES - size))[None]
            prompt = model._window_prompt(language, opts.task, timestamps, all_tokens[prompt_reset_since:])
            first_prompt = prompt if first_prompt is None else first_prompt
            if state is not None:
                state.window, state.seek, state.n_windows = window, seek, window + 1
            feats = {"input_features": window_mel.to(model.device)}
            with keep_encoder_output(model, opts.word_timestamps) as seen:  # word timings reuse the encoder's output
                r = decode_with_fallback(
                    lambda rows, t: model._decode_rows(feats, prompt, t, opts, rows), 1, opts.temperature,
                    compression_ratio_threshold=opts.compression_ratio_threshold,
                    logprob_threshold=opts.logprob_threshold, no_speech_threshold=opts.no_speech_threshold, state=state,
                )[0]
            window += 1
            previous_seek = seek
            if opts.no_speech_threshold is not None and r.no_speech_prob > opts.no_speech_threshold and not (
                opts.logprob_threshold is not None and r.avg_logprob > opts.logprob_threshold
            ):
                seek += size
                bar.update(min(content_frames, seek) - previous_seek)
                continue
            finished = finished and r.finished
            cuts, single_ending, paired = split_segments(r.tokens, tb)
            current: list[tuple[Segment, list[float]]] = []
            for a, b, start, end in cuts:
                if math.isnan(end):
                    end = size * HOP_SECONDS
                toks = r.tokens[a:b]
                current.append((Segment(
                    id=0, seek=seek, start=time_offset + start, end=time_offset + end,
                    text=decode([t for t in toks if t < model.cfg.eos_token_id]),
                    tokens=toks, avg_logprob=r.avg_logprob, compression_ratio=r.compression_ratio,
                    no_speech_prob=r.no_speech_prob, temperature=r.temperature,
                ), r.logprobs[a:b]))
            if paired and not single_ending:
                # the last segment is unfinished: drop it and start the next window at its start
                seek += (r.tokens[cuts[-1][1] - 1] - tb) * INPUT_STRIDE
            else:
                seek += size
            if opts.word_timestamps:
                last_speech = model._add_word_timestamps(
                    [s for s, _ in current], time_offset=time_offset, last_speech_timestamp=last_speech,
                    input_features=window_mel, num_frames=size, language=language, task=opts.task, options=opts,
                    encoder_hidden_states=encoder_row(seen, 0, 1),
                )
                if not single_ending:
                    ends = [w.end for s, _ in current for w in (s.words or [])]
                    if ends and ends[-1] > time_offset:
                        seek = round(ends[-1] / HOP_SECONDS)
            for seg, lps in current:
                if seg.start == seg.end or (tok is not None and not seg.text.strip()) or not seg.tokens:
                    continue  # instantaneous or textless: dropped, as faster-whisper does
                seg.id = len(segments)
                segments.append(seg)
                kept_tokens += seg.tokens
                kept_lps += lps
            all_tokens += [t for s, _ in current for t in s.tokens]
            if not opts.condition_on_previous_text or r.temperature > 0.5:
                prompt_reset_since = len(all_tokens)
            bar.update(min(content_frames, seek) - previous_seek)
    finally:
        bar.close()
    words: list[WordTiming] | None = [w for s in segments for w in (s.words or [])] if opts.word_timestamps else None
    text = decode([t for t in kept_tokens if t < model.cfg.eos_token_id]).strip() if tok is not None else None
    return TranscriptionResult(
        text=text, tokens=kept_tokens, token_logprobs=kept_lps, prompt=first_prompt or [], finished=finished,
        language=language, segments=segments, words=words,
        extra={"n_windows": window, "compression_ratio": compression_ratio(text or "")},
    )



def join_windows(
    parts: list[TranscriptionResult], window_samples: int, language: str | None, has_text: bool = True
) -> TranscriptionResult:
    """One result from windows transcribed independently (window ``i`` starts at
    ``i * window_samples``): tokens, log-probs and segments in order, segment times shifted
    to the recording's clock, texts joined by a space."""
    from hooked_asr.audio import HOP_LENGTH, SAMPLE_RATE

    tokens: list[int] = []
    lps: list[float] = []
    segments: list[Segment] = []
    for i, r in enumerate(parts):
        tokens += r.tokens
        lps += r.token_logprobs
        offset = i * window_samples / SAMPLE_RATE
        for seg in r.segments:
            seg.id, seg.seek = len(segments), i * window_samples // HOP_LENGTH
            seg.start, seg.end = seg.start + offset, seg.end + offset
            segments.append(seg)
    text = " ".join(r.text for r in parts if r.text) if has_text else None
    return TranscriptionResult(
        text=text, tokens=tokens, token_logprobs=lps, prompt=parts[0].prompt, finished=all(r.finished for r in parts),
        language=language, segments=segments,
        extra={"n_windows": len(parts), "n_audio_tokens": [r.extra.get("n_audio_tokens") for r in parts]},
    )
