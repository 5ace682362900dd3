"""Word timings from the decoder's cross-attention, as openai-whisper's ``timing.py``.

Teacher-force ``[sot sequence] <|notimestamps|> text... <|endoftext|>`` and read the
cross-attention scores ``QK^T / sqrt(d_head)`` of the alignment heads (``model.cfg.alignment_heads``;
every head of the upper half of the decoder when a checkpoint names none). Per head
``h`` over the ``n`` frames that hold audio::

    w_h = softmax(scores_h[:, :n])                 # [token, frame]
    w_h = (w_h - mean_tokens(w_h)) / std_tokens(w_h)
    w_h = median_filter_frames(w_h, 7)
    M   = mean_h(w_h)[rows that predict text tokens and end of text]
    path = DTW(-M)                                 # monotonic token -> frame alignment

Row ``i`` of ``M`` is the position whose output *predicts* text token ``i`` (the position of
the token before it): that is where the decoder looks at the audio of token ``i``. A token
starts at the first frame the path gives it; a word spans from its first token's start to the
next word's start (20 ms per encoder frame).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from hooked_asr.models.decoding.results import Segment, WordTiming

FRAME_SECONDS = 0.02  # one encoder frame (two mel frames)
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def dtw(cost: Float[np.ndarray, "rows cols"]) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path through ``cost`` from (0, 0) to (rows-1, cols-1) with steps (1,1), (1,0),
    (0,1) and least total cost; ties prefer (0,1) then... exactly as openai-whisper's ``dtw_cpu``
    (diagonal only when strictly best, then vertical when strictly best, else horizontal).
    Returns ``(row_indices, col_indices)`` along the path. Vectorised over anti-diagonals."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    acc[0, 0] = 0.0
    x = cost.astype(np.float32)
    for d in range(2, n + m + 1):  # cells (i, j) with i + j = d, 1 <= i <= n, 1 <= j <= m
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        acc[i, j] = x[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, rows, cols = n, m, [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        k = trace[i, j]
        if k == 0:
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def median_filter(x: Float[torch.Tensor, "... frames"], width: int) -> torch.Tensor:
    """Median over a sliding window of odd ``width`` along the last axis, edges reflected
    (``d c b | a b c d``), as openai-whisper's ``median_filter``."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).sort(-1).values[..., pad].reshape(shape)


def alignment_heads(model: Any) -> list[tuple[int, int]]:
    """``cfg.alignment_heads``, or every head of the upper half of the decoder when empty."""
    heads = [(int(layer), int(h)) for layer, h in (model.cfg.alignment_heads or [])]
    if heads:
        return heads
    n_l, n_h = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
    return [(layer, h) for layer in range(n_l // 2, n_l) for h in range(n_h)]


def split_to_word_tokens(tokenizer: Any, tokens: list[int], language: str | None = None) -> tuple[list[str], list[list[int]]]:
    """openai-whisper's word split: byte-complete pieces, joined into words at spaces (special
    tokens and punctuation stand alone); languages written without spaces split per piece."""
    if tokenizer is None:  # no text to join pieces by: each token is a word
        return [f" <{t}>" for t in tokens], [[t] for t in tokens]
    eot = tokenizer.eot
    decode = tokenizer.decode_with_timestamps
    full = decode(tokens)
    subwords, subword_tokens, current, offset = [], [], [], 0
    for t in tokens:
        current.append(t)
        piece = decode(current)
        if "\ufffd" not in piece or full[offset + piece.index("\ufffd")] == "\ufffd":
            subwords.append(piece)
            subword_tokens.append(current)
            current = []
            offset += len(piece)
    if language in {"zh", "ja", "th", "lo", "my", "yue"}:
        return subwords, subword_tokens
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for sw, swt in zip(subwords, subword_tokens):
        if swt[0] >= eot or sw.startswith(" ") or sw.strip() in string.punctuation or not words:
            words.append(sw)
            word_tokens.append(list(swt))
        else:
            words[-1] += sw
            word_tokens[-1].extend(swt)
    return words, word_tokens


@torch.no_grad()
def alignment_matrix(
    model: Any,
    text_tokens: Sequence[int],
    *,
    input_features: Float[torch.Tensor, "1 n_mels frames"] | None = None,
    encoder_hidden_states: Float[torch.Tensor, "1 frame d_model"] | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    medfilt_width: int = 7,
    qk_scale: float = 1.0,
) -> tuple[Float[torch.Tensor, "token frame"], list[float]]:
    """``(M, token_probs)``: the alignment heads' standardised, median-filtered attention averaged
    over heads, one row per text token plus one for end of text (the rows that *predict* them),
    over the ``num_frames // 2`` encoder frames that hold audio; and each text token's probability."""
    if not getattr(model.cfg.decoder, "cross_attention", False):
        raise ValueError(f"word timings read cross-attention; {type(model).__name__} has none")
    text_tokens = [int(t) for t in text_tokens]
    if encoder_hidden_states is None:
        if input_features is None:
            raise ValueError("pass input_features or encoder_hidden_states")
        encoder_hidden_states = model.encode(input_features)
    prompt = model.sot_sequence(language, task)  # ends with <|notimestamps|> where the vocabulary has it
    first = len(prompt) - 1  # the position that predicts the first text token
    eos = model.cfg.eos_token_id
    ids = torch.tensor([prompt + text_tokens + [eos]], device=encoder_hidden_states.device)
    heads = alignment_heads(model)
    layers = sorted({layer for layer, _ in heads})
    scores: dict[int, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: Any) -> None:
        scores[int(hook.name.split(".")[2])] = x[0].detach()

    names = [f"decoder.blocks.{layer}.cross_attn.hook_attn_scores" for layer in layers]
    with model.hooks(fwd_hooks=[(n, grab) for n in names]):
        logits = model(encoder_hidden_states=encoder_hidden_states, decoder_input_ids=ids)[0]
    n_enc = encoder_hidden_states.shape[1]
    # At least one frame (a clip of < 20 ms has none), and a zero std (one frame: every token's
    # weight is 1) left at 0 rather than 0/0: a NaN matrix sent the DTW path to frame -1 (-0.02 s).
    n = max(1, n_enc if num_frames is None else min(n_enc, num_frames // 2))
    w = torch.stack([scores[layer][h] for layer, h in heads])[:, :, :n].float()  # [head, token, frame]
    w = (w * qk_scale).softmax(-1)
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = median_filter((w - mean) / torch.where(std > 0, std, 1.0), medfilt_width)
    probs = logits[first:, :eos].float().softmax(-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens, dtype=torch.long)].tolist()
    return w.mean(0)[first:-1], token_probs


def find_alignment(
    model: Any,
    text_tokens: Sequence[int],
    *,
    input_features: Float[torch.Tensor, "1 n_mels frames"] | None = None,
    encoder_hidden_states: Float[torch.Tensor, "1 frame d_model"] | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    medfilt_width: int = 7,
    qk_scale: float = 1.0,
) -> list[WordTiming]:
    """Words of ``text_tokens`` (no special tokens) with start/end seconds from the window start.

    ``num_frames``: mel frames (100 per second) that hold audio (default: all). The decoder is
    teacher-forced on the plain sot sequence of ``language``/``task`` (no previous text), as
    openai-whisper does. Each word's ``probability`` is the mean of its tokens' probabilities.

    >>> words = find_alignment(model, out.tokens, input_features=feats, num_frames=len(audio) // 160)
    """
    text_tokens = [int(t) for t in text_tokens]
    if not text_tokens:
        return []
    matrix, token_probs = alignment_matrix(
        model, text_tokens, input_features=input_features, encoder_hidden_states=encoder_hidden_states,
        num_frames=num_frames, language=language, task=task, medfilt_width=medfilt_width, qk_scale=qk_scale,
    )
    rows, cols = dtw(-matrix.double().cpu().numpy())
    words, word_tokens = split_to_word_tokens(model.tokenizer, text_tokens + [model.cfg.eos_token_id], language)
    if len(word_tokens) <= 1:
        return []
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
    jump_times = cols[jumps] * FRAME_SECONDS
    starts, ends = jump_times[bounds[:-1]], jump_times[bounds[1:]]
    return [
        WordTiming(word, float(s), float(e), float(np.mean(token_probs[i:j])), list(wt))
        for word, wt, s, e, i, j in zip(words, word_tokens, starts, ends, bounds[:-1], bounds[1:])
    ]


def merge_punctuations(alignment: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS, appended: str = APPEND_PUNCTUATIONS) -> None:
    """Attach opening punctuation to the next word and closing punctuation to the previous one."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        prev, nxt = alignment[i], alignment[j]
        if prev.word.startswith(" ") and prev.word.strip() in prepended:
            nxt.word, nxt.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        prev, nxt = alignment[i], alignment[j]
        if not prev.word.endswith(" ") and nxt.word in appended:
            prev.word, prev.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            nxt.word, nxt.tokens = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(
    model: Any, segments: list[Segment], *, time_offset: float, last_speech_timestamp: float,
    input_features: torch.Tensor | None = None, encoder_hidden_states: torch.Tensor | None = None,
    num_frames: int | None = None, language: str | None = None, task: str = "transcribe",
    prepend_punctuations: str = PREPEND_PUNCTUATIONS, append_punctuations: str = APPEND_PUNCTUATIONS,
) -> float:
    """Fill ``segment.words`` for one window's segments (openai-whisper's ``add_word_timestamps``,
    with its clamps of over-long words at sentence and segment boundaries); returns the new
    ``last_speech_timestamp``."""
    if not segments:
        return last_speech_timestamp
    eot = model.cfg.eos_token_id
    per_segment = [[t for t in s.tokens if t < eot] for s in segments]
    text_tokens = [t for ts in per_segment for t in ts]
    alignment = find_alignment(
        model, text_tokens, input_features=input_features, encoder_hidden_states=encoder_hidden_states,
        num_frames=num_frames, language=language, task=task,
    )
    durations = np.array([w.end - w.start for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        marks = ".。!！?？"
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > longest:
                if alignment[i].word in marks:
                    alignment[i].end = alignment[i].start + longest
                elif alignment[i - 1].word in marks:
                    alignment[i].start = alignment[i].end - longest
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)
    k = 0
    for seg, toks in zip(segments, per_segment):
        saved, words = 0, []
        while k < len(alignment) and saved < len(toks):
            a = alignment[k]
            if a.word:
                words.append(WordTiming(a.word, round(time_offset + a.start, 2), round(time_offset + a.end, 2), a.probability, a.tokens))
            saved += len(a.tokens)
            k += 1
        if words:
            if words[0].end - last_speech_timestamp > median * 4 and (
                words[0].end - words[0].start > longest
                or (len(words) > 1 and words[1].end - words[0].start > longest * 2)
            ):
                if len(words) > 1 and words[1].end - words[1].start > longest:
                    boundary = max(words[1].end / 2, words[1].end - longest)
                    words[0].end = words[1].start = boundary
                words[0].start = max(0, words[0].end - longest)
            if seg.start < words[0].end and seg.start - 0.5 > words[0].start:
                words[0].start = max(0, min(words[0].end - median, seg.start))
            else:
                seg.start = words[0].start
            if seg.end > words[-1].start and seg.end + 0.5 < words[-1].end:
                words[-1].end = max(words[-1].start + median, seg.end)
            else:
                seg.end = words[-1].end
            last_speech_timestamp = seg.end
        seg.words = words
    return last_speech_timestamp
