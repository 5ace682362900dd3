"""Encoder lens: the unchanged decoder reading each encoder layer.

For each encoder layer ``l`` the decoder reads ``finish_encoder(encoder.blocks.{l}.hook_resid_post)``
(the final encoder norm, plus pooling and projection on Qwen2-Audio) instead of the encoder
output; all layers decode as one batch. A layer's transcript is flagged empty, a repetition loop
(:func:`hooked_asr.repetition.find_loops`, the one loop detector), a prefix of the final
transcript, or cut at the length limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hooked_asr.hooks import act_name
from hooked_asr.lens.logit import one_result
from hooked_asr.repetition import find_loops
from hooked_asr.text import clip_text, word_error_rate


@dataclass
class EncoderLensLayer:
    """The transcript the unchanged decoder produces from encoder layer ``layer``."""

    layer: int
    tokens: list[int]
    text: str | None
    finished: bool
    empty: bool
    repetition_loop: bool
    matches_final_prefix: bool  # non-empty and a prefix of the final transcript's tokens
    common_prefix: int  # tokens shared with the start of the final transcript
    wer: float | None  # word error rate against the final transcript (None without text)


@dataclass
class EncoderLensResult:
    layers: list[EncoderLensLayer]
    final: Any  # the ordinary TranscriptionResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "final": {"text": self.final.text, "tokens": list(self.final.tokens)},
            "layers": [vars(l) for l in self.layers],
        }

    def table(self) -> str:
        lines = [f"{'layer':>5} {'flags':<14} {'wer':>5}  transcript", "-" * 72]
        for r in self.layers:
            flags = ",".join(
                f
                for f, on in [
                    ("empty", r.empty),
                    ("loop", r.repetition_loop),
                    ("prefix", r.matches_final_prefix),
                    ("cut", not r.finished),
                ]
                if on
            )
            wer = "" if r.wer is None else f"{r.wer:.2f}"
            text = r.text if r.text is not None else " ".join(map(str, r.tokens))
            lines.append(f"{r.layer:>5} {flags:<14} {wer:>5}  {clip_text(text, 120)}")
        final = self.final.text if self.final.text is not None else " ".join(map(str, self.final.tokens))
        lines.append(f"{'final':>5} {'':<14} {'':>5}  {clip_text(final, 120)}")
        return "\n".join(lines)


@torch.no_grad()
def encoder_lens_states(model: Any, features: dict[str, torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """``finish_encoder(encoder.blocks.{l}.hook_resid_post)`` for each ``l`` in ``layers``, stacked
    on the batch axis: ``[len(layers) * batch, ..., d_model]``. One encoder pass (hooks read every
    layer), equal to ``finish_encoder(encode(features, stop_at_layer=l + 1))``."""
    names = [act_name("resid_post", l, "encoder") for l in layers]
    grabbed: dict[str, torch.Tensor] = {}

    def grab(resid: torch.Tensor, hook: Any) -> None:
        grabbed[hook.name] = resid

    with model.hooks(fwd_hooks=[(n, grab) for n in names]):
        model.encode(**features)
    return torch.cat([model.finish_encoder(grabbed[n], **features) for n in names], dim=0)


@torch.no_grad()
def encoder_lens(
    model: Any,
    audio: Any,
    layers: Sequence[int] | None = None,
    max_new_tokens: int | None = None,
    language: str | None = None,
    final: Any | None = None,
) -> EncoderLensResult:
    """Decode from every encoder layer with the unchanged decoder, all layers in one batch.

    ``final`` is the ordinary transcript (computed when not given); its prompt is reused for every
    layer. ``max_new_tokens`` defaults to ``max(2 * len(final) + 10, 32)``: longer outputs are
    loops, and an uncapped loop would decode to the context limit.
    """
    n_enc = model.n_layers["encoder"]
    layers = list(range(n_enc)) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < n_enc]
    if bad:
        raise ValueError(f"encoder layers {bad} out of range: the encoder has {n_enc} blocks (0-{n_enc - 1})")
    features = model.prepare_features(audio)
    main = next(iter(features))
    if features[main].shape[0] != 1:
        raise ValueError(f"encoder_lens takes one audio, got a batch of {features[main].shape[0]}")
    if final is None:
        final = one_result(model.transcribe(audio, language=language))
    states = encoder_lens_states(model, features, layers)
    batch = {k: v.expand(len(layers), *v.shape[1:]) for k, v in features.items()}
    if max_new_tokens is None:
        max_new_tokens = max(2 * len(final.tokens) + 10, 32)
    main_input = batch.pop(main)
    gen = model.generate(
        main_input,
        final.prompt,
        max_new_tokens=max_new_tokens,
        encoder_hidden_states=states,
        **model.generation_kwargs(),
        **batch,
    )
    rows = []
    for layer, r in zip(layers, model.results_from_generation(gen, final.prompt, language=final.language)):
        toks, text, finished = r.tokens, r.text, r.finished
        common = 0
        while common < min(len(toks), len(final.tokens)) and toks[common] == final.tokens[common]:
            common += 1
        rows.append(
            EncoderLensLayer(
                layer=layer,
                tokens=toks,
                text=text,
                finished=finished,
                empty=(not toks) or (text is not None and not text.strip()),
                repetition_loop=bool(find_loops(toks)),
                matches_final_prefix=bool(toks) and common == len(toks),
                common_prefix=common,
                wer=word_error_rate(final.text, text) if text is not None and final.text is not None else None,
            )
        )
    return EncoderLensResult(layers=rows, final=final)


__all__ = ["EncoderLensLayer", "EncoderLensResult", "encoder_lens", "encoder_lens_states"]
