"""The matrix word timings are read from: the decoder's cross-attention over the audio frames.

Teacher-force ``[sot sequence] <|notimestamps|> units... <|endoftext|>`` and read the
cross-attention scores ``QK^T / sqrt(d_head)`` of a set of heads. Per head ``h`` over the ``n``
frames that hold audio (openai-whisper's normalisation, ``norm="zscore"``)::

    w_h = softmax(scores_h[:, :n])                 # [unit, frame]
    w_h = (w_h - mean_units(w_h)) / std_units(w_h)
    w_h = median_filter_frames(w_h, 7)
    M   = mean_h(w_h)[rows that predict the units and end of text]
    path = DTW(-M)                                 # monotonic unit -> frame alignment

or arXiv 2509.09987's (``norm="l2"``): median filter (width 3) the scores, softmax, divide each
frame by its L2 norm over units. Which heads: the checkpoint's list (``"openai"``), a list you
give, or ``"detected"``: every head read and the best ranked on the window itself by
:func:`rank_heads`. Which units: BPE tokens, or one character per token (see :func:`alignment`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from hooked_asr.components.products import decoding_products


def dtw(cost: Float[np.ndarray, "rows cols"]) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path through ``cost`` from (0, 0) to (rows-1, cols-1) with steps (1,1), (1,0),
    (0,1) and least total cost; ties prefer (0,1) then... exactly as openai-whisper's ``dtw_cpu``
    (diagonal only when strictly best, then vertical when strictly best, else horizontal).
    Returns ``(row_indices, col_indices)`` along the path. Vectorised over anti-diagonals, each
    stored as a row (``D[i + j, i] = acc[i, j]``), so that a step reads its three predecessors
    as contiguous slices: half the time of gathering them by index."""
    n, m = cost.shape
    acc = np.full((n + m + 1, n + 1), np.inf, dtype=np.float32)
    acc[0, 0] = 0.0
    x = np.zeros((n + m + 1, n + 1), dtype=np.float32)
    i, j = np.meshgrid(np.arange(1, n + 1), np.arange(1, m + 1), indexing="ij")
    x[i + j, i] = cost.astype(np.float32)
    trace = np.full((n + m + 1, n + 1), 2, dtype=np.int8)
    for d in range(2, n + m + 1):  # cells (i, j) with i + j = d, 1 <= i <= n, 1 <= j <= m
        lo, hi = max(1, d - m), min(n, d - 1)
        c0, c1, c2 = acc[d - 2, lo - 1 : hi], acc[d - 1, lo - 1 : hi], acc[d - 1, lo : hi + 1]
        diag = (c0 < c1) & (c0 < c2)
        up = (c1 < c0) & (c1 < c2)
        np.add(x[d, lo : hi + 1], np.where(diag, c0, np.where(up, c1, c2)), out=acc[d, lo : hi + 1])
        trace[d, lo : hi + 1] = 2 - 2 * diag - up
    i, j, rows, cols = n, m, [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        k = trace[i + j, i] if i > 0 and j > 0 else (2 if i == 0 else 1)  # the edges run to (0, 0)
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
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")[:, 0]
    if torch.isnan(x).any():  # sort's order for NaN (last), which minimum / maximum do not keep
        return y.unfold(-1, width, 1).sort(-1).values[..., pad].reshape(shape)
    # The window's middle value through a selection network of elementwise minimum / maximum over
    # the ``width`` shifted copies (the same value sort picks, without a sort per window).
    # Every window's first comparators sort adjacent pairs: sorted once for the row and shared.
    # Results go to a few reused buffers: a fresh buffer per op paid ~1 ms of page faults each.
    n = shape[-1]
    lo, hi = torch.minimum(y[:, :-1], y[:, 1:]), torch.maximum(y[:, :-1], y[:, 1:])
    v = [y[:, k : k + n] for k in range(width)]
    owned = [False] * width  # v[k] is one of this call's buffers (written in place from now on)
    spare: list[torch.Tensor] = []
    touched: set[int] = set()

    def take() -> torch.Tensor:
        return spare.pop() if spare else torch.empty(y.shape[0], n, dtype=y.dtype, device=y.device)

    for a, b, keep_lo, keep_hi in _median_network(width):
        if b == a + 1 and not touched & {a, b}:
            v[a], v[b] = lo[:, a : a + n], hi[:, a : a + n]
        elif keep_lo and keep_hi:
            low = torch.minimum(v[a], v[b], out=take())
            high = v[a] if owned[a] else v[b] if owned[b] else take()
            torch.maximum(v[a], v[b], out=high)  # in place into an operand: elementwise, read before written
            if owned[a] and owned[b]:
                spare.append(v[b])
            v[a], v[b], owned[a], owned[b] = low, high, True, True
        else:  # only one side of the pair is read later
            keep, drop = (a, b) if keep_lo else (b, a)
            op = torch.minimum if keep_lo else torch.maximum
            out = v[keep] if owned[keep] else v[drop] if owned[drop] else take()
            v[keep] = op(v[a], v[b], out=out)
            if owned[drop] and out is not v[drop]:
                spare.append(v[drop])
            owned[keep], owned[drop] = True, False
        touched |= {a, b}
    return v[pad].reshape(shape)


@functools.cache
def _median_network(width: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Comparators ``(a, b, keep_min, keep_max)`` that leave the median of ``width`` wires on wire
    ``width // 2``: Batcher's odd-even merge sort (wires past ``width`` hold +inf, so their comparators
    drop out), pruned backwards to what reaches the middle wire, each keeping only the side read
    later (width 7: 22 elementwise ops against odd-even transposition sort's 42)."""
    n = 1 << (width - 1).bit_length()
    net, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        net.append((i + j, i + j + k))
            k //= 2
        p *= 2
    need, keep = {width // 2}, []
    for a, b in reversed([(a, b) for a, b in net if b < width]):
        if a in need or b in need:
            keep.append((a, b, a in need, b in need))
            need |= {a, b}
    return tuple(reversed(keep))


def alignment_heads(model: Any) -> list[tuple[int, int]]:
    """``cfg.alignment_heads``, or every head of the upper half of the decoder when empty."""
    heads = [(int(layer), int(h)) for layer, h in (model.cfg.alignment_heads or [])]
    if heads:
        return heads
    n_l, n_h = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
    return [(layer, h) for layer in range(n_l // 2, n_l) for h in range(n_h)]


HEAD_CHOICES = ("openai", "detected")
UNITS = ("token", "character")


def check_word_options(heads: Any, unit: str) -> None:
    """Refuse an unknown ``alignment_heads`` / ``word_unit`` with the accepted values."""
    if unit not in UNITS:
        raise ValueError(f"word_unit={unit!r}: one of {list(UNITS)}")
    if isinstance(heads, str):
        if heads not in HEAD_CHOICES:
            raise ValueError(f"alignment_heads={heads!r}: one of {list(HEAD_CHOICES)} or a list of (layer, head) pairs")
        return
    try:
        pairs = [(int(layer), int(h)) for layer, h in heads]
    except (TypeError, ValueError):
        raise ValueError(
            f"alignment_heads={heads!r}: one of {list(HEAD_CHOICES)} or a list of (layer, head) pairs"
        ) from None
    if not pairs:
        raise ValueError("alignment_heads=[]: name at least one (layer, head) pair, or 'openai' / 'detected'")


def _explicit_heads(model: Any, heads: Any) -> list[tuple[int, int]] | None:
    """The (layer, head) list to read, or None for ``"detected"`` (every head is read and ranked)."""
    if isinstance(heads, str):
        check_word_options(heads, "token")
        return alignment_heads(model) if heads == "openai" else None
    pairs = [(int(layer), int(h)) for layer, h in heads]
    n_l, n_h = model.cfg.decoder.n_layers, model.cfg.decoder.n_heads
    bad = [p for p in pairs if not (0 <= p[0] < n_l and 0 <= p[1] < n_h)]
    if bad or not pairs:
        raise ValueError(
            f"alignment_heads {bad or pairs}: the decoder has {n_l} layers (0-{n_l - 1}) of {n_h} heads "
            f"(0-{n_h - 1}); pass (layer, head) pairs in range, 'openai' or 'detected'"
        )
    return pairs


def character_tokens(tokenizer: Any, text_tokens: Sequence[int]) -> tuple[list[int], list[int], str]:
    """The text of ``text_tokens`` spelled one character per token (a character the vocabulary has
    no single token for takes several), as "Whisper Has an Internal Word Aligner" (arXiv 2509.09987)
    teacher-forces it. Returns ``(tokens, first_token_of_each_char, text)`` for ``text`` = the
    decoded text without its leading whitespace."""
    text = tokenizer.decode([int(t) for t in text_tokens]).lstrip()
    tokens: list[int] = []
    first: list[int] = []
    for c in text:
        first.append(len(tokens))
        tokens += list(tokenizer.encode(c))
    return tokens, first, text


@torch.no_grad()
def _cross_attention(
    model: Any,
    ids: list[int],
    encoder_hidden_states: torch.Tensor,
    layers: list[int],
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One teacher-forced decoder pass: the cross-attention scores of ``layers``
    (``{layer: [head, token, frame]}``) and the logits ``[token, vocab]``."""
    scores: dict[int, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: Any) -> None:
        scores[int(hook.name.split(".")[2])] = x[0].detach()

    names = [f"decoder.blocks.{layer}.cross_attn.hook_attn_scores" for layer in layers]
    t = torch.tensor([ids], device=encoder_hidden_states.device)
    # Part of decoding, so decoding's products (oneDNN from 3 rows: the unembedding of ~100 rows
    # 63 -> 39 ms on tiny.en, one thread); the same numbers to float32 rounding.
    with model.hooks(fwd_hooks=[(n, grab) for n in names]), decoding_products():
        logits = model(encoder_hidden_states=encoder_hidden_states, decoder_input_ids=t)[0]
    return scores, logits


def _normalise(w: torch.Tensor, medfilt_width: int, qk_scale: float, norm: str) -> torch.Tensor:
    """``[head, token, frame]`` scores -> the matrices DTW reads, per head.
    ``"zscore"`` (openai-whisper): softmax over frames, standardise each frame over tokens, median
    filter along frames. ``"l2"`` (arXiv 2509.09987): median filter the scores, softmax, divide
    each frame by its L2 norm over tokens."""
    if norm == "zscore":
        w = (w * qk_scale).softmax(-1)
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        # a zero std (one frame: every token's weight is 1) left at 0 rather than 0/0: a NaN
        # matrix sent the DTW path to frame -1 (-0.02 s)
        return median_filter((w - mean) / torch.where(std > 0, std, 1.0), medfilt_width)
    if norm == "l2":
        w = median_filter(w, medfilt_width) if medfilt_width > 1 else w
        w = (w * qk_scale).softmax(-1)
        return w / w.norm(dim=-2, keepdim=True).clamp_min(1e-12)
    raise ValueError(f"norm={norm!r}: 'zscore' or 'l2'")


def rank_heads(
    attn: Float[torch.Tensor, "head token frame"],
    spans: torch.Tensor | None = None,
) -> Float[torch.Tensor, "head"]:
    """A score per head of how well its attention ``attn`` (softmax over frames, the rows that
    predict text) follows the audio, with no reference transcript or timing.

    With ``spans`` (``[token, 2]`` first/last frame of each row's unit from a first alignment),
    the alignment detector's score (``hooked_asr.circuits.detectors``, kind ``"alignment"``) with the
    model's own alignment as reference: ``mean_t sum_{f in span_t} attn[h, t, f]``. Without:
    arXiv 2509.09987's peakedness ``sum_f ||attn[h, :, f]||_2 + sum_t ||attn[h, t, :]||_2``."""
    if spans is None:
        return attn.norm(dim=-2).sum(-1) + attn.norm(dim=-1).sum(-1)
    f = torch.arange(attn.shape[-1], device=attn.device)
    inside = (f[None, :] >= spans[:, :1]) & (f[None, :] <= spans[:, 1:])  # [token, frame]
    return (attn * inside).sum(-1).mean(-1)


def _path_spans(matrix: torch.Tensor, widen: int = 0) -> torch.Tensor:
    """``[row, 2]`` first/last frame DTW gives each row of ``matrix`` (widened by ``widen`` frames)."""
    rows, cols = dtw(-matrix.double().cpu().numpy())
    n = matrix.shape[0]
    lo = np.full(n, matrix.shape[1] - 1)
    hi = np.zeros(n, dtype=np.int64)
    np.minimum.at(lo, rows, cols)
    np.maximum.at(hi, rows, cols)
    return torch.tensor(np.stack([lo - widen, hi + widen], 1))


@torch.no_grad()
def alignment(
    model: Any,
    text_tokens: Sequence[int],
    *,
    input_features: Float[torch.Tensor, "1 n_mels frames"] | None = None,
    encoder_hidden_states: Float[torch.Tensor, "1 frame d_model"] | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    heads: str | Sequence[tuple[int, int]] = "openai",
    unit: str = "token",
    medfilt_width: int | None = None,
    qk_scale: float = 1.0,
    norm: str | None = None,
    top_k: int | None = None,
    detect_by: str = "self",
) -> dict[str, Any]:
    """The alignment step's pieces: ``matrix`` (``[unit + 1, frame]``, the heads' normalised
    attention averaged, rows that predict each unit and end of text; for characters, the first
    pass's), ``heads`` used, ``token_probs`` (each text token's teacher-forced probability) and,
    for characters, ``text`` (see :func:`character_tokens`) and ``char_start`` (the first encoder
    frame of each character of ``text``, then of end of text).

    ``heads="detected"`` reads every head and keeps the ``top_k`` (default: as many as the
    checkpoint lists, else 8) that :func:`rank_heads` scores highest on this very window, with no
    reference: ``detect_by="self"`` by the alignment detector's score against a first alignment
    with the checkpoint's heads (characters always rank this way), ``"peak"`` by peakedness
    (arXiv 2509.09987's filter; measured worse here). ``unit="character"`` teacher-forces the
    text one character per token, in as many passes as the decoder's trained positions need
    (``n_ctx // 2``: ~220 characters a pass). ``norm`` / ``medfilt_width`` (see :func:`_normalise`)
    default to openai-whisper's ``"zscore"`` / 7 for tokens and the paper's ``"l2"`` / 3 for
    characters (measured best on espeak speech, benchmarks/bench_word_timing.py)."""
    if not getattr(model.cfg.decoder, "cross_attention", False):
        raise ValueError(f"word timings read cross-attention; {type(model).__name__} has none")
    check_word_options(heads, unit)
    text_tokens = [int(t) for t in text_tokens]
    if encoder_hidden_states is None:
        if input_features is None:
            raise ValueError("pass input_features or encoder_hidden_states")
        encoder_hidden_states = model.encode(input_features)
    prompt = model.sot_sequence(language, task)  # ends with <|notimestamps|> where the vocabulary has it
    first = len(prompt) - 1  # the position that predicts the first text token
    eos = model.cfg.eos_token_id
    n_enc = encoder_hidden_states.shape[1]
    n = n_enc if num_frames is None else max(1, min(n_enc, num_frames // 2))
    if norm is None:
        norm = "l2" if unit == "character" else "zscore"
    if medfilt_width is None:
        medfilt_width = 3 if unit == "character" else 7
    chosen = _explicit_heads(model, heads)

    def matrix_of(
        units: list[int],
        read: list[tuple[int, int]] | None,
        spans: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor]:
        """The DTW matrix of ``units`` teacher-forced after the prompt, the heads read (``read``, or
        ranked when None, against ``spans`` if given), and the logits."""
        lays = sorted({layer for layer, _ in read}) if read is not None else list(range(model.cfg.decoder.n_layers))
        scores, logits = _cross_attention(model, prompt + units + [eos], encoder_hidden_states, lays)
        rows = slice(first, first + len(units) + 1)  # normalised over every row (as openai-whisper), then cut
        done: dict[int, torch.Tensor] = {}  # head (index in every) -> its normalised matrix, when reusable
        if read is None:
            every = [(layer, h) for layer in lays for h in range(model.cfg.decoder.n_heads)]
            raw = torch.stack([scores[layer][h] for layer, h in every])[:, :, :n].float()
            if spans is not None:
                rank = rank_heads((raw[:, rows] * qk_scale).softmax(-1), spans.to(raw.device))
            elif detect_by == "peak":
                rank = rank_heads((raw[:, first : first + len(units)] * qk_scale).softmax(-1))
            elif detect_by == "self":
                base = [every.index(hd) for hd in alignment_heads(model)]
                seeds = _normalise(raw[base], 7, qk_scale, "zscore")
                if (medfilt_width, norm) == (7, "zscore"):  # each head normalises alone: reused below
                    done = dict(zip(base, seeds))
                rank = rank_heads(
                    (raw[:, rows] * qk_scale).softmax(-1), _path_spans(seeds.mean(0)[rows], 5).to(raw.device)
                )
            else:
                raise ValueError(f"detect_by={detect_by!r}: 'self' or 'peak'")
            keep = rank.argsort(descending=True)[: top_k or len(model.cfg.alignment_heads or []) or 8].tolist()
            read = [every[i] for i in keep]
            rest = [i for i in keep if i not in done]
            if rest:
                done |= dict(zip(rest, _normalise(raw[rest], medfilt_width, qk_scale, norm)))
            w = torch.stack([done[i] for i in keep])
        else:
            w = _normalise(
                torch.stack([scores[layer][h] for layer, h in read])[:, :, :n].float(), medfilt_width, qk_scale, norm
            )
        return w.mean(0)[rows], read, logits

    def probs_of(logits: torch.Tensor) -> list[float]:
        p = logits[first:, :eos].float().softmax(-1)
        return p[torch.arange(len(text_tokens)), torch.tensor(text_tokens, dtype=torch.long)].tolist()

    if unit == "token" or model.tokenizer is None:
        matrix, used, logits = matrix_of(text_tokens, chosen)
        return {"matrix": matrix, "heads": used, "token_probs": probs_of(logits), "char_start": None, "text": None}
    # Characters. First the token alignment (openai-whisper's: the checkpoint's heads), which also
    # gives the words' confidence; then chunks of at most n_ctx // 2 - prompt positions spelled one
    # character per token (Whisper decodes at most n_ctx // 2 tokens a window: later positions are
    # barely trained and a long character alignment drifts by seconds there), each aligned by DTW
    # inside the frames the token alignment gives its characters, +- ``band`` frames. With
    # ``heads="detected"`` the heads are ranked per chunk by the alignment detector's score
    # against those frames.
    tok = model.tokenizer
    band = 25
    tmatrix, _, logits = matrix_of(text_tokens, alignment_heads(model))
    trows, tcols = dtw(-tmatrix.double().cpu().numpy())
    tjump = np.pad(np.diff(trows), (1, 0), constant_values=1).astype(bool)
    tstart = tcols[tjump]  # first frame of each token, then of end of text
    chars, char_first, text = character_tokens(tok, text_tokens)
    char_first.append(len(chars))
    owner = np.zeros(len(text) + 1, dtype=np.int64)  # the token each character of the text comes from
    pos = 0
    for i, t in enumerate(text_tokens):
        piece = tok.decode(text_tokens[: i + 1]).lstrip()
        owner[pos : len(piece)] = i
        pos = max(pos, len(piece))
    owner[pos:] = len(text_tokens)
    lo_f = tstart[owner] - band
    hi_f = np.append(tstart[1:], n - 1)[np.minimum(owner, len(tstart) - 1)] + band
    char_start = np.zeros(len(text) + 1)
    room = model.cfg.decoder.n_ctx // 2 - len(prompt) - 1
    matrix, used_heads, ca = None, [], 0
    while ca < len(text):
        cb = ca
        for sp in [i for i in range(ca + 1, len(text)) if text[i] == " "] + [len(text)]:
            if char_first[sp] - char_first[ca] > room:
                break
            cb = sp
        if cb == ca:
            raise ValueError(
                f"a word of {char_first[len(text)] - char_first[ca]} character tokens does not fit the "
                f"decoder's {room} positions; use word_unit='token'"
            )
        units = chars[char_first[ca] : char_first[cb]]
        unit_char = (
            np.searchsorted(np.array(char_first[ca:cb]) - char_first[ca], np.arange(len(units)), "right") - 1 + ca
        )
        unit_char = np.append(unit_char, cb)  # the end-of-text row: the chunk's end
        c0 = int(char_start[ca]) if ca else 0  # where the previous chunk ended: times never run backwards
        c1 = min(n, int(hi_f[ca : cb + 1].max()) + 1) if cb < len(text) else n
        spans = torch.tensor(np.stack([lo_f[unit_char] + band - 5, hi_f[unit_char] - band + 5], 1))
        m, used, _ = matrix_of(units, chosen, spans if chosen is None else None)
        matrix = m if matrix is None else matrix
        used_heads += [h for h in used if h not in used_heads]
        cost = -m[:, c0:c1].double().cpu().numpy()
        f = np.arange(c0, c1)
        outside = (f[None, :] < lo_f[unit_char][:, None]) | (f[None, :] > hi_f[unit_char][:, None])
        rows, cols = dtw(cost + 10.0 * outside)
        jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
        starts = cols[jumps] + c0  # first frame of each row: the chunk's character tokens, end of text
        local = np.array(char_first[ca : cb + 1]) - char_first[ca]
        char_start[ca : cb + 1] = starts[np.minimum(local, len(starts) - 1)]
        ca = cb
    return {
        "matrix": matrix,
        "heads": used_heads,
        "token_probs": probs_of(logits),
        "char_start": char_start,
        "text": text,
    }


def alignment_matrix(
    model: Any,
    text_tokens: Sequence[int],
    *,
    input_features: Float[torch.Tensor, "1 n_mels frames"] | None = None,
    encoder_hidden_states: Float[torch.Tensor, "1 frame d_model"] | None = None,
    num_frames: int | None = None,
    language: str | None = None,
    task: str = "transcribe",
    medfilt_width: int | None = None,
    qk_scale: float = 1.0,
    **options: Any,
) -> tuple[Float[torch.Tensor, "token frame"], list[float]]:
    """``(M, token_probs)``: the alignment heads' standardised, median-filtered attention averaged
    over heads, one row per text token plus one for end of text (the rows that *predict* them),
    over the ``num_frames // 2`` encoder frames that hold audio; and each text token's probability.
    ``options``: ``heads``, ``unit``, ``norm``, ``top_k`` of :func:`alignment`."""
    a = alignment(
        model,
        text_tokens,
        input_features=input_features,
        encoder_hidden_states=encoder_hidden_states,
        num_frames=num_frames,
        language=language,
        task=task,
        medfilt_width=medfilt_width,
        qk_scale=qk_scale,
        **options,
    )
    return a["matrix"], a["token_probs"]


__all__ = [
    "HEAD_CHOICES",
    "UNITS",
    "alignment",
    "alignment_heads",
    "alignment_matrix",
    "character_tokens",
    "check_word_options",
    "dtw",
    "median_filter",
    "rank_heads",
]
