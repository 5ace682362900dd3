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
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hooked_asr.audio import MEL_FRAME_SECONDS, MEL_FRAMES_PER_ENCODER_FRAME, N_FRAMES
from hooked_asr.models.decoding.fallback import compression_ratio, decode_with_fallback
from hooked_asr.models.decoding.options import TranscribeOptions
from hooked_asr.models.decoding.results import Segment, TranscriptionResult, WordTiming
from hooked_asr.models.decoding.timestamps import split_segments
from hooked_asr.models.decoding.timing import (
    APPEND_PUNCTUATIONS,
    PREPEND_PUNCTUATIONS,
    encoder_row,
    keep_encoder_output,
)


def clip_ranges(clip_timestamps: str | Sequence[float], content_frames: int) -> list[tuple[int, int]]:
    """openai-whisper's ``clip_timestamps`` (``"start,end,start,end,..."`` seconds, or a list; the
    last end defaults to the end of the audio) as ``[(first frame, end frame), ...]``."""
    if isinstance(clip_timestamps, str):
        times = [float(x) for x in clip_timestamps.split(",") if x.strip()] if clip_timestamps else []
    else:
        times = [float(x) for x in clip_timestamps]
    points = [round(t / MEL_FRAME_SECONDS) for t in times] or [0]
    if len(points) % 2:
        points.append(content_frames)
    return list(zip(points[::2], points[1::2]))


def _last_end(segments: list[Segment]) -> float | None:
    """openai-whisper's ``get_end``: the last word's end, else the last segment's."""
    ends = [w.end for s in segments for w in (s.words or [])]
    return ends[-1] if ends else (segments[-1].end if segments else None)


def _word_anomaly(word: WordTiming) -> float:
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_anomaly(segment: Segment | None) -> bool:
    """openai-whisper's ``is_segment_anomaly``: its first 8 words are very short, long or improbable."""
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w.word not in _PUNCTUATION][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


_PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS  # openai-whisper's ``punctuation``


def _skip_hallucinated_silence(
    current: list[Segment],
    threshold: float,
    *,
    time_offset: float,
    window_end_time: float,
    segment_duration: float,
    last_speech: float,
    previous_seek: int,
    seek: int,
    single_ending: bool,
    content_frames: int,
) -> tuple[int, bool]:
    """openai-whisper's ``hallucination_silence_threshold`` rules for one window: ``(seek, skip)``;
    ``current`` is cut in place before the first segment that looks hallucinated in silence.
    ``skip``: the window's first words look hallucinated after a long gap, so nothing is kept and
    decoding restarts at them."""
    if not single_ending:
        end = _last_end(current)
        if end is not None and end > time_offset:
            remaining = window_end_time - end
            seek = (
                round(end / MEL_FRAME_SECONDS)
                if remaining > threshold
                else previous_seek + round(segment_duration / MEL_FRAME_SECONDS)
            )
    first = next((s for s in current if s.words), None)
    if first is not None and _is_anomaly(first):
        gap = first.start - time_offset
        if gap > threshold:
            return previous_seek + round(gap / MEL_FRAME_SECONDS), True
    hal_last_end = last_speech
    for i, seg in enumerate(current):
        if not seg.words:
            continue
        if _is_anomaly(seg):
            nxt = next((s for s in current[i + 1 :] if s.words), None)
            hal_next_start = nxt.words[0].start if nxt is not None else time_offset + segment_duration
            silence_before = (
                seg.start - hal_last_end > threshold or seg.start < threshold or seg.start - time_offset < 2.0
            )
            silence_after = hal_next_start - seg.end > threshold or _is_anomaly(nxt) or window_end_time - seg.end < 2.0
            if silence_before and silence_after:
                seek = round(max(time_offset + 1, seg.start) / MEL_FRAME_SECONDS)
                if content_frames * MEL_FRAME_SECONDS - seg.end < threshold:
                    seek = content_frames
                del current[i:]
                break
        hal_last_end = seg.end
    return seek, False


def transcribe_sequential(
    model: Any,
    mel: torch.Tensor,
    content_frames: int,
    opts: TranscribeOptions,
    language: str | None,
    initial_tokens: list[int],
) -> TranscriptionResult:
    """``mel [n_mels, content_frames + padding]`` -> one :class:`TranscriptionResult` over all windows
    (openai-whisper's ``transcribe`` loop, option for option)."""
    has_ts = model.cfg.no_timestamps_token_id is not None
    tb = model.cfg.no_timestamps_token_id + 1 if has_ts else model.cfg.decoder.d_vocab
    if opts.without_timestamps is None or not has_ts:  # without timestamp tokens: full-window steps
        opts = dataclasses.replace(opts, without_timestamps=not has_ts or bool(opts.without_timestamps))
    if opts.max_new_tokens is None:  # openai-whisper's sample_len for each window
        opts = dataclasses.replace(opts, max_new_tokens=model.cfg.decoder.n_ctx // 2)
    timestamps = not opts.without_timestamps
    state = model.decoding_state
    window, prompt_reset_since = 0, 0
    all_tokens = list(initial_tokens)
    remaining_prompt_length = model.cfg.decoder.n_ctx // 2 - 1 - len(initial_tokens)
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
    clips = clip_ranges(opts.clip_timestamps, content_frames)
    seek = clips[0][0]
    try:
        for clip_start, clip_end in clips:
            seek = max(seek, clip_start)
            while seek < clip_end:
                time_offset = seek * MEL_FRAME_SECONDS
                window_end_time = (seek + N_FRAMES) * MEL_FRAME_SECONDS
                size = min(N_FRAMES, content_frames - seek, clip_end - seek)
                window_mel = F.pad(mel[:, seek : seek + size], (0, N_FRAMES - size))[None]
                if opts.carry_initial_prompt:
                    rest = all_tokens[max(len(initial_tokens), prompt_reset_since) :]
                    previous = list(initial_tokens) + (
                        rest[-remaining_prompt_length:] if remaining_prompt_length > 0 else []
                    )
                else:
                    previous = all_tokens[prompt_reset_since:]
                prompt = model._window_prompt(language, opts.task, timestamps, previous)
                first_prompt = prompt if first_prompt is None else first_prompt
                if state is not None:
                    state.window, state.seek, state.n_windows = window, seek, window + 1
                feats = {"input_features": window_mel.to(model.device)}
                with keep_encoder_output(
                    model, opts.word_timestamps
                ) as seen:  # word timings reuse the encoder's output
                    r = decode_with_fallback(
                        lambda rows, t: model._decode_rows(feats, prompt, t, opts, rows),
                        1,
                        opts.temperature,
                        compression_ratio_threshold=opts.compression_ratio_threshold,
                        logprob_threshold=opts.logprob_threshold,
                        no_speech_threshold=opts.no_speech_threshold,
                        state=state,
                    )[0]
                window += 1
                previous_seek = seek
                if (
                    opts.no_speech_threshold is not None
                    and r.no_speech_prob > opts.no_speech_threshold
                    and not (opts.logprob_threshold is not None and r.avg_logprob > opts.logprob_threshold)
                ):
                    seek += size
                    bar.update(min(content_frames, seek) - previous_seek)
                    continue
                finished = finished and r.finished
                cuts, single_ending, paired = split_segments(r.tokens, tb)
                current: list[Segment] = []
                lps_of: dict[int, list[float]] = {}
                for a, b, start, end in cuts:
                    if math.isnan(end):
                        end = size * MEL_FRAME_SECONDS
                    toks = r.tokens[a:b]
                    current.append(
                        Segment(
                            id=0,
                            seek=seek,
                            start=time_offset + start,
                            end=time_offset + end,
                            text=decode([t for t in toks if t < model.cfg.eos_token_id]),
                            tokens=toks,
                            avg_logprob=r.avg_logprob,
                            compression_ratio=r.compression_ratio,
                            no_speech_prob=r.no_speech_prob,
                            temperature=r.temperature,
                        )
                    )
                    lps_of[id(current[-1])] = r.logprobs[a:b]
                if paired and not single_ending:
                    # the last segment is unfinished: drop it and start the next window at its start
                    seek += (r.tokens[cuts[-1][1] - 1] - tb) * MEL_FRAMES_PER_ENCODER_FRAME
                else:
                    seek += size
                if opts.word_timestamps:
                    model._add_word_timestamps(
                        current,
                        time_offset=time_offset,
                        last_speech_timestamp=last_speech,
                        input_features=window_mel,
                        num_frames=size,
                        language=language,
                        task=opts.task,
                        options=opts,
                        encoder_hidden_states=encoder_row(seen, 0, 1),
                    )
                    if not single_ending:
                        end = _last_end(current)
                        if end is not None and end > time_offset:
                            seek = round(end / MEL_FRAME_SECONDS)
                    if opts.hallucination_silence_threshold is not None:
                        seek, skip = _skip_hallucinated_silence(
                            current,
                            opts.hallucination_silence_threshold,
                            time_offset=time_offset,
                            window_end_time=window_end_time,
                            segment_duration=size * MEL_FRAME_SECONDS,
                            last_speech=last_speech,
                            previous_seek=previous_seek,
                            seek=seek,
                            single_ending=single_ending,
                            content_frames=content_frames,
                        )
                        if skip:
                            continue
                    end = _last_end(current)
                    if end is not None:
                        last_speech = end
                window_tokens: list[int] = []
                for seg in current:
                    if seg.start == seg.end or (tok is not None and not seg.text.strip()) or not seg.tokens:
                        continue  # instantaneous or textless: cleared, its tokens never prompt a later window
                    seg.id = len(segments)
                    segments.append(seg)
                    kept_tokens += seg.tokens
                    kept_lps += lps_of[id(seg)]
                    window_tokens += seg.tokens
                all_tokens += window_tokens
                if not opts.condition_on_previous_text or r.temperature > opts.prompt_reset_on_temperature:
                    prompt_reset_since = len(all_tokens)
                bar.update(min(content_frames, seek) - previous_seek)
    finally:
        bar.close()
    words: list[WordTiming] | None = [w for s in segments for w in (s.words or [])] if opts.word_timestamps else None
    text = decode([t for t in kept_tokens if t < model.cfg.eos_token_id]).strip() if tok is not None else None
    return TranscriptionResult(
        text=text,
        tokens=kept_tokens,
        token_logprobs=kept_lps,
        prompt=first_prompt or [],
        finished=finished,
        language=language,
        segments=segments,
        words=words,
        extra={"n_windows": window, "compression_ratio": compression_ratio(text or "")},
    )


__all__ = ["clip_ranges", "join_windows", "transcribe_sequential"]


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
        text=text,
        tokens=tokens,
        token_logprobs=lps,
        prompt=parts[0].prompt,
        finished=all(r.finished for r in parts),
        language=language,
        segments=segments,
        extra={"n_windows": len(parts), "n_audio_tokens": [r.extra.get("n_audio_tokens") for r in parts]},
    )
