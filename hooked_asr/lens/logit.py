"""Logit lens (decoder): what each decoder layer already predicts.

Layer ``l``'s residual ``h_l = decoder.blocks.{l}.hook_resid_post`` is read as if it were the
last layer::

    lens_l = unembed(ln_final(h_l))          # ln_final applied explicitly: hooks never normalise

so ``lens_{L-1}`` *is* the model's logits. Per decoding step ``s`` and layer ``l`` we report the
top-k tokens, the probability and rank of the token finally chosen at ``s``, and the ranks of the
tokens chosen at ``s+1`` and ``s+2`` (does a layer already predict the future?). Ranks are
1-based: ``rank = 1 + #{v : lens[v] > lens[token]}``.

Saturation layer of a step: the earliest layer whose top-1 equals the final prediction (the
last layer's top-1) and stays equal in every later layer. A token that is right at layer 1,
wrong at layer 2 and right again from layer 3 saturates at 3.

Dataset-level curves (:func:`lens_curves`) average every step of every transcript, with
Student-t confidence intervals (:func:`hooked_asr.text.mean_ci`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from hooked_asr.hooks import act_name
from hooked_asr.text import clip_text, mean_ci


def decoder_lens_names(model: Any) -> list[str]:
    """``decoder.blocks.{l}.hook_resid_post`` for every decoder layer, in order."""
    return [act_name("resid_post", l, "decoder") for l in range(model.n_layers["decoder"])]


def apply_logit_lens(model: Any, resid: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_vocab"]:
    """``unembed(ln_final(resid))``: the decoder's head applied to any residual."""
    return model.decoder.unembed(model.decoder.ln_final(resid))


def token_ranks(
    logits: Float[torch.Tensor, "... d_vocab"], tokens: Int[torch.Tensor, "..."]
) -> Int[torch.Tensor, "..."]:
    """1-based rank of ``tokens`` under ``logits``: ``1 + #{v : logits[v] > logits[token]}`` (ties
    favour the token, so an argmax has rank 1)."""
    own = logits.gather(-1, tokens.unsqueeze(-1))
    return (logits > own).sum(-1) + 1


def saturation_layer(
    top1: Int[torch.Tensor, "layer ..."], final: Int[torch.Tensor, "..."] | None = None
) -> Int[torch.Tensor, "..."]:
    """Earliest layer from which ``top1[l] == final`` holds in every later layer.

    ``final`` defaults to the last layer's top-1 (then the answer is at most ``n_layers - 1``).
    With another ``final`` (e.g. a suppressed greedy choice that the last layer does not rank
    first) a step whose last layer disagrees gets ``n_layers``: never saturated.

    Maths: with ``a_l = [top1_l == final]``, the answer is ``L - (number of trailing ones of a)``.
    """
    if top1.ndim < 1 or top1.shape[0] == 0:
        raise ValueError(f"top1 must be [layer, ...] with at least one layer, got shape {tuple(top1.shape)}")
    final = top1[-1] if final is None else final
    agree = (top1 == final).long()
    trailing = agree.flip(0).cumprod(0).sum(0)
    return top1.shape[0] - trailing


@dataclass
class LogitLensResult:
    """The logit lens of one transcript (layers = ``decoder.blocks.{l}.hook_resid_post``).

    ``tokens[s]`` is the token chosen at step ``s`` (teacher-forced or generated);
    ``final[s]`` the last layer's top-1 (differs from ``tokens`` only where the transcript was
    forced or generation suppressed a token). Ranks are 1-based; ``future_ranks[l, s, j]`` is the
    rank of ``tokens[s + 1 + j]`` at step ``s`` (0 past the end).
    """

    tokens: Int[torch.Tensor, "step"]
    final: Int[torch.Tensor, "step"]
    layer_names: list[str]
    topk_ids: Int[torch.Tensor, "layer step k"]
    topk_probs: Float[torch.Tensor, "layer step k"]
    chosen_prob: Float[torch.Tensor, "layer step"]
    chosen_rank: Int[torch.Tensor, "layer step"]
    future_ranks: Int[torch.Tensor, "layer step n_future"]
    saturation: Int[torch.Tensor, "step"]
    token_strs: list[str]
    topk_strs: list[list[list[str]]] = field(default_factory=list)  # [layer][step][k]
    prompt: list[int] = field(default_factory=list)
    text: str | None = None
    mode: str = "teacher_forced"
    logits: Float[torch.Tensor, "layer step d_vocab"] | None = None

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def n_steps(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def top1(self) -> Int[torch.Tensor, "layer step"]:
        return self.topk_ids[..., 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no full logits)."""
        return {
            "mode": self.mode,
            "text": self.text,
            "prompt": self.prompt,
            "layers": self.layer_names,
            "tokens": self.tokens.tolist(),
            "token_strs": self.token_strs,
            "final": self.final.tolist(),
            "saturation": self.saturation.tolist(),
            "chosen_prob": self.chosen_prob.tolist(),
            "chosen_rank": self.chosen_rank.tolist(),
            "future_ranks": self.future_ranks.tolist(),
            "topk_ids": self.topk_ids.tolist(),
            "topk_probs": self.topk_probs.tolist(),
            "topk_strs": self.topk_strs,
        }

    def table(self, max_steps: int | None = None) -> str:
        """A readable per-layer table: one row per step, one column per layer, each cell
        ``top-1 token (p of chosen)``; ``*`` marks the saturation layer."""
        steps = range(min(self.n_steps, max_steps or self.n_steps))
        width = 16
        head = f"{'step':>4} {'chosen':<14} {'sat':>3} | " + " ".join(
            f"{'L' + str(l):<{width}}" for l in range(self.n_layers)
        )
        lines = [head, "-" * len(head)]
        for s in steps:
            cells = []
            for l in range(self.n_layers):
                mark = "*" if l == int(self.saturation[s]) else " "
                cell = f"{mark}{clip_text(self.topk_strs[l][s][0], 8)} {float(self.chosen_prob[l, s]):.2f}"
                cells.append(f"{cell:<{width}}")
            lines.append(
                f"{s:>4} {clip_text(self.token_strs[s], 14):<14} {int(self.saturation[s]):>3} | " + " ".join(cells)
            )
        return "\n".join(lines)


def token_string(model: Any, token: int) -> str:
    """The text of one token (``<id>`` when the model has no tokenizer or the token has no text)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return f"<{token}>"
    try:
        if hasattr(tok, "token_to_string"):  # names special tokens (<|endoftext|>) instead of dropping them
            s = tok.token_to_string(int(token))
        else:
            try:
                s = tok.decode([int(token)], skip_special_tokens=False)
            except TypeError:
                s = tok.decode([int(token)])
    except Exception:  # a tokenizer that refuses an id (outside its vocabulary): show the id
        s = ""
    return s if s else f"<{token}>"


@torch.no_grad()
def summarize_lens(
    lens_logits: Float[torch.Tensor, "layer step d_vocab"],
    tokens: Int[torch.Tensor, "step"],
    top_k: int = 5,
    n_future: int = 2,
) -> dict[str, torch.Tensor]:
    """Top-k, probability / rank of the chosen token, future ranks and saturation from lens logits.

    ``p_l(s) = softmax(lens_logits[l, s])``. Saturation is measured against the last layer's top-1.
    """
    if lens_logits.ndim != 3 or lens_logits.shape[1] != tokens.shape[0]:
        raise ValueError(
            f"lens_logits must be [layer, step, vocab] with step = len(tokens) = {tokens.shape[0]}, "
            f"got {tuple(lens_logits.shape)}"
        )
    n_layers, n_steps, _ = lens_logits.shape
    logprobs = F.log_softmax(lens_logits.float(), dim=-1)
    top_lp, top_ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
    chosen = tokens.to(logprobs.device).expand(n_layers, -1)
    chosen_prob = logprobs.gather(-1, chosen.unsqueeze(-1))[..., 0].exp()
    chosen_rank = token_ranks(logprobs, chosen)
    future = torch.zeros(n_layers, n_steps, n_future, dtype=torch.long, device=logprobs.device)
    for j in range(n_future):
        shift = j + 1
        if n_steps > shift:
            future[:, : n_steps - shift, j] = token_ranks(logprobs[:, : n_steps - shift], chosen[:, shift:])
    return {
        "topk_ids": top_ids,
        "topk_probs": top_lp.exp(),
        "chosen_prob": chosen_prob,
        "chosen_rank": chosen_rank,
        "future_ranks": future,
        "final": top_ids[-1, :, 0],
        "saturation": saturation_layer(top_ids[..., 0]),
    }


def _result_from_resid(
    model: Any,
    resid: Float[torch.Tensor, "layer step d_model"],
    tokens: Int[torch.Tensor, "step"],
    layer_names: list[str],
    top_k: int,
    n_future: int,
    keep_logits: bool,
    **meta: Any,
) -> LogitLensResult:
    with torch.no_grad():
        lens_logits = apply_logit_lens(model, resid)
    summary = summarize_lens(lens_logits, tokens, top_k=top_k, n_future=n_future)
    memo: dict[int, str] = {}

    def name(t: int) -> str:
        if t not in memo:
            memo[t] = token_string(model, t)
        return memo[t]

    return LogitLensResult(
        tokens=tokens.cpu(),
        layer_names=layer_names,
        token_strs=[name(t) for t in tokens.tolist()],
        topk_strs=[[[name(t) for t in step] for step in layer] for layer in summary["topk_ids"].tolist()],
        logits=lens_logits.cpu() if keep_logits else None,
        **{k: v.cpu() for k, v in summary.items()},
        **meta,
    )


def one_result(out: Any) -> Any:
    """One TranscriptionResult: ``transcribe`` returns a list for feature tensors, even of batch 1."""
    if isinstance(out, list):
        if len(out) != 1:
            raise ValueError(f"lenses take one audio at a time, got a batch of {len(out)}; loop over them")
        return out[0]
    return out


@torch.no_grad()
def logit_lens(
    model: Any,
    audio: Any,
    tokens: Sequence[int] | None = None,
    *,
    top_k: int = 5,
    n_future: int = 2,
    append_eos: bool = True,
    keep_logits: bool = False,
    language: str | None = None,
    **transcribe_kwargs: Any,
) -> LogitLensResult:
    """Logit lens on a teacher-forced transcript.

    ``tokens``: the continuation after the model's prompt (default: the model's own greedy
    transcript). With ``append_eos`` the end-of-text token is forced too, so the last step shows
    when each layer knows the utterance is over. Step ``s`` reads position ``prompt_len - 1 + s``
    (the position whose output predicts ``tokens[s]``).
    """
    text = None
    if tokens is None:
        out = one_result(model.transcribe(audio, language=language, **transcribe_kwargs))
        tokens, text, language = list(out.tokens), out.text, out.language or language
    tokens = [int(t) for t in tokens]
    if append_eos and (not tokens or tokens[-1] not in model.stop_token_ids()):
        tokens = tokens + [int(model.cfg.eos_token_id)]
    if not tokens:
        raise ValueError("nothing to lens: tokens is empty and append_eos=False")
    tf_kwargs = {"language": language} if language is not None else {}
    inputs = model.teacher_forced_inputs(audio, tokens, **tf_kwargs)
    _, cache = model.run_with_cache(**inputs.kwargs, names_filter=decoder_lens_names(model))
    return logit_lens_of_cache(model, cache, inputs, top_k=top_k, n_future=n_future, keep_logits=keep_logits, text=text)


def logit_lens_of_cache(
    model: Any,
    cache: Mapping[str, torch.Tensor],
    inputs: Any,
    *,
    top_k: int = 5,
    n_future: int = 2,
    keep_logits: bool = False,
    text: str | None = None,
) -> LogitLensResult:
    """:func:`logit_lens` of a teacher-forced run already recorded: ``cache`` holds
    :func:`decoder_lens_names` ``[1, pos, d_model]`` of ``model(**inputs.kwargs)`` (a
    ``TeacherForcedInputs``; the run may have had hooks live), every continuation token a step.

    >>> _, cache = model.run_with_cache(**inputs.kwargs, names_filter=decoder_lens_names(model))
    >>> logit_lens_of_cache(model, cache, inputs).chosen_prob   # [layer, step]
    """
    names = decoder_lens_names(model)
    p, n = inputs.prompt_len, inputs.tokens.shape[1] - inputs.prompt_len
    resid = torch.stack([cache[name][0, p - 1 : p - 1 + n] for name in names])
    return _result_from_resid(
        model,
        resid,
        inputs.tokens[0, p : p + n],
        names,
        top_k,
        n_future,
        keep_logits,
        prompt=inputs.tokens[0, :p].tolist(),
        text=text,
        mode="teacher_forced",
    )


@torch.no_grad()
def logit_lens_generate(
    model: Any,
    audio: Any,
    *,
    top_k: int = 5,
    n_future: int = 2,
    keep_logits: bool = False,
    **transcribe_kwargs: Any,
) -> LogitLensResult:
    """Logit lens during greedy generation: hooks on every decoder layer's ``hook_resid_post``
    record the newest position at every step of ``model.transcribe(audio)``.

    Steps are the generated tokens, plus the end-of-text step when generation finished. The
    chosen token is the generated one (after token suppression); probabilities are the lens's
    unsuppressed softmax.
    """
    names = decoder_lens_names(model)
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    calls: list[tuple[int, int, int, int]] = []  # (window, retry, step, positions) of each decoding call

    def grab(resid: torch.Tensor, hook: Any) -> None:
        state = model.decoding_state
        if state is None:  # not a decoding step (a teacher-forced forward)
            return
        if resid.shape[0] != 1:
            raise ValueError(f"logit_lens_generate lenses one audio at a time; the decoder saw batch {resid.shape[0]}")
        if hook.name == names[0]:
            calls.append((state.window, state.retry, state.step, resid.shape[1]))
        captured[hook.name].append(resid[0, -1].detach())

    with model.hooks(fwd_hooks=[(n, grab) for n in names]):
        out = one_result(model.transcribe(audio, **transcribe_kwargs))
    n_steps = len(out.tokens) + int(out.finished)
    if n_steps == 0:
        raise ValueError("generation produced no step to lens (max_new_tokens=0?)")
    # The transcript is the last attempt's (temperature fallback retries, language detection
    # before it): its steps 0..n-1 start at the last call that is step 0 over the whole prompt.
    # Steps after a stop token that did not end generation are not part of the transcript.
    if len({c[0] for c in calls}) > 1:
        raise ValueError(
            "logit_lens_generate lenses one 30-s window; split long audio with hooked_asr.audio.chunk_audio"
        )
    starts = [i for i, c in enumerate(calls) if c[2] == 0 and c[3] == len(out.prompt) and i + n_steps <= len(calls)]
    if not starts or [c[2] for c in calls[starts[-1] : starts[-1] + n_steps]] != list(range(n_steps)):
        raise RuntimeError(
            f"could not find the {n_steps} decoding steps among {len(calls)} decoder calls "
            f"((window, retry, step, positions) {calls[:8]}...) for a prompt of {len(out.prompt)} tokens"
        )
    first = starts[-1]
    resid = torch.stack([torch.stack(captured[n][first : first + n_steps]) for n in names])
    tokens = list(out.tokens)
    if out.finished:
        # The stop token generation chose: the highest-scoring stop id (stop ids are never suppressed).
        stops = model.stop_token_ids()
        final_logits = apply_logit_lens(model, resid[-1, -1])
        tokens.append(stops[int(final_logits[stops].argmax())])
    return _result_from_resid(
        model,
        resid,
        torch.tensor(tokens, device=resid.device),
        names,
        top_k,
        n_future,
        keep_logits,
        prompt=list(out.prompt),
        text=out.text,
        mode="generate",
    )


@dataclass
class LensCurves:
    """Dataset-level logit-lens curves (every token of every transcript is one sample).

    Each curve is ``[layer, 3]``: mean, CI low, CI high.
    """

    layer_names: list[str]
    n_tokens: int
    n_transcripts: int
    chosen_prob: np.ndarray  # p_l(chosen) by layer
    top1_agreement: np.ndarray  # P(top1_l == final) by layer
    log_rank: np.ndarray  # log10 rank of the chosen token by layer
    future_log_rank: np.ndarray  # [n_future, layer, 3]: log10 rank of token s+1+j
    saturation: tuple[float, float, float]  # mean, CI low, CI high (layer index)
    saturation_fraction: tuple[float, float, float]  # the same divided by (n_layers - 1)
    saturation_hist: np.ndarray  # [n_layers + 1] counts; the last bin counts "never"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layer_names,
            "n_tokens": self.n_tokens,
            "n_transcripts": self.n_transcripts,
            "chosen_prob": self.chosen_prob.tolist(),
            "top1_agreement": self.top1_agreement.tolist(),
            "log10_rank": self.log_rank.tolist(),
            "future_log10_rank": self.future_log_rank.tolist(),
            "saturation_mean_ci": list(self.saturation),
            "saturation_fraction_mean_ci": list(self.saturation_fraction),
            "saturation_hist": self.saturation_hist.tolist(),
        }


def lens_curves(results: Sequence[LogitLensResult], confidence: float = 0.95) -> LensCurves:
    """Mean curves over every step of every result, with Student-t confidence intervals."""
    if not results:
        raise ValueError("lens_curves needs at least one LogitLensResult")
    n_layers = results[0].n_layers
    if any(r.n_layers != n_layers for r in results):
        raise ValueError(f"results mix models: layer counts {sorted({r.n_layers for r in results})}")

    def cat(get: Callable[[LogitLensResult], torch.Tensor]) -> np.ndarray:
        return torch.cat([get(r).float() for r in results], dim=-1).numpy()

    def curve(x: np.ndarray) -> np.ndarray:  # x: [layer, n]
        return np.array([mean_ci(row, confidence) for row in x])

    prob = cat(lambda r: r.chosen_prob)
    agree = cat(lambda r: (r.top1 == r.final).float())
    log_rank = np.log10(cat(lambda r: r.chosen_rank))
    n_future = results[0].future_ranks.shape[-1]
    fut = []
    for j in range(n_future):
        # Only steps that have a token s+1+j.
        parts = [r.future_ranks[:, : max(r.n_steps - 1 - j, 0), j].float() for r in results]
        fut.append(curve(np.log10(torch.cat(parts, dim=-1).numpy())))
    sat = cat(lambda r: r.saturation)
    return LensCurves(
        layer_names=list(results[0].layer_names),
        n_tokens=int(prob.shape[1]),
        n_transcripts=len(results),
        chosen_prob=curve(prob),
        top1_agreement=curve(agree),
        log_rank=curve(log_rank),
        future_log_rank=np.stack(fut) if fut else np.zeros((0, n_layers, 3)),
        saturation=mean_ci(sat, confidence),
        saturation_fraction=mean_ci(sat / max(n_layers - 1, 1), confidence),
        saturation_hist=np.bincount(sat.astype(int), minlength=n_layers + 1),
    )


__all__ = [
    "LensCurves",
    "LogitLensResult",
    "apply_logit_lens",
    "decoder_lens_names",
    "lens_curves",
    "logit_lens",
    "logit_lens_generate",
    "logit_lens_of_cache",
    "one_result",
    "saturation_layer",
    "summarize_lens",
    "token_ranks",
    "token_string",
]
