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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule

from hooked_asr.config import ModelConfig
from hooked_asr.hooks import unknown_hook_message
from hooked_asr.models.tl_compat import TLCompatMixin


@dataclass
class GenerationOutput:
    """Greedy decoding result for a batch. ``tokens`` excludes the prompt; finished rows
    are padded with ``eos`` and log-prob 0."""

    sequences: Int[torch.Tensor, "batch pos"]
    tokens: Int[torch.Tensor, "batch new"]
    logprobs: Float[torch.Tensor, "batch new"]
    finished: torch.Tensor  # [batch] bool: reached end of text before the length limit


@dataclass
class TranscriptionResult:
    """One transcript. ``tokens`` are the generated ids without the prompt or end of text;
    ``token_logprobs[i]`` is ``log p(tokens[i])`` under the (suppressed) greedy distribution."""

    text: str | None
    tokens: list[int]
    token_logprobs: list[float]
    prompt: list[int]
    finished: bool
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def avg_logprob(self) -> float:
        return sum(self.token_logprobs) / max(len(self.token_logprobs), 1)


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


class HookedEncoderDecoder(TLCompatMixin, HookedRootModule, ABC):
    """Shared machinery: hook-name validation, greedy generation with live hooks.

    The model-agnostic API that methods (lens, patching, probing, SAE) use:
    ``prepare_features(audio)``, ``teacher_forced_inputs(audio, continuation)``,
    ``encode(features, stop_at_layer)``, ``finish_encoder(resid)``,
    ``generate(features, prompt_ids, encoder_hidden_states=...)``, ``transcribe(audio)``,
    ``decoder.ln_final`` and ``decoder.unembed``, ``n_layers``, ``tokenizer``.
    """

    cfg: ModelConfig

    @abstractmethod
    def prepare_features(self, audio: Any, sampling_rate: int | None = None) -> dict[str, torch.Tensor]:
        """Audio (path, array, list, or ready features) -> the encoder's keyword inputs
        (``{"input_features": ...}`` plus any mask)."""

    @abstractmethod
    def teacher_forced_inputs(
        self, audio: Any, continuation: Sequence[int] = (), language: str | None = None, task: str = "transcribe"
    ) -> TeacherForcedInputs:
        """Inputs for one forward over the prompt followed by ``continuation`` tokens."""

    @abstractmethod
    def finish_encoder(self, resid: Float[torch.Tensor, "batch frame d_model"], **feature_kwargs: Any) -> torch.Tensor:
        """What follows the encoder blocks (final norm; Qwen2-Audio also pools and projects):
        turns ``encoder.blocks.{l}.hook_resid_post`` into what the decoder reads. The encoder lens
        is ``finish_encoder(encode(features, stop_at_layer=l + 1))``."""

    # ---- hook names -------------------------------------------------------------------
    @property
    def n_layers(self) -> dict[str, int]:
        return {"encoder": self.cfg.encoder.n_layers, "decoder": self.cfg.decoder.n_layers}

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
    @abstractmethod
    def _generation_context(self, input_features: torch.Tensor, **kwargs: Any) -> Any:
        """Run the encoder once; returns whatever ``_decode_step`` needs."""

    @abstractmethod
    def _decode_step(
        self, context: Any, input_ids: torch.Tensor, past_kv: Any
    ) -> tuple[Float[torch.Tensor, "batch pos d_vocab"], Any]:
        """Decoder logits for ``input_ids`` (the new tokens if ``past_kv`` is given, else all)."""

    @torch.no_grad()
    def generate(
        self,
        input_features: Float[torch.Tensor, "batch n_mels frames"],
        prompt_ids: Sequence[int] | Int[torch.Tensor, "batch prompt"],
        max_new_tokens: int | None = None,
        use_cache: bool = True,
        suppress_tokens: Sequence[int] | None = None,
        begin_suppress_tokens: Sequence[int] | None = None,
        eos_token_id: int | None = None,
        max_length: int | None = None,
        **context_kwargs: Any,
    ) -> GenerationOutput:
        """Greedy decoding with every hook live at every step.

        At each step ``t``: ``logits_t[s] = -inf`` for suppressed ``s`` (and for
        ``begin_suppress_tokens`` at the first step), ``token_t = argmax logits_t``,
        ``logprob_t = log_softmax(logits_t)[token_t]``. Stops when every row has produced
        ``eos`` or after ``max_new_tokens``.
        """
        device = input_features.device
        batch = input_features.shape[0]
        prompt = torch.as_tensor(prompt_ids, device=device, dtype=torch.long)
        if prompt.ndim == 1:
            prompt = prompt.expand(batch, -1)
        eos = self.cfg.eos_token_id if eos_token_id is None else eos_token_id
        suppress = list(self.cfg.suppress_tokens if suppress_tokens is None else suppress_tokens)
        begin = list(self.cfg.begin_suppress_tokens if begin_suppress_tokens is None else begin_suppress_tokens)
        limit = max_length or self.cfg.decoder.n_ctx
        room = limit - prompt.shape[1]
        if room <= 0:
            raise ValueError(f"the prompt has {prompt.shape[1]} tokens; the decoder reads at most {limit}")
        max_new_tokens = room if max_new_tokens is None else min(max_new_tokens, room)

        context = self._generation_context(input_features, **context_kwargs)
        vocab = self.cfg.decoder.d_vocab
        suppress_mask = torch.zeros(vocab, dtype=torch.bool, device=device)
        suppress_mask[[s for s in suppress if s < vocab]] = True
        begin_mask = suppress_mask.clone()
        begin_mask[[s for s in begin if s < vocab]] = True

        seq, cache = prompt, None
        new_tokens, new_logprobs = [], []
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            feed = seq if (cache is None or not use_cache) else seq[:, -1:]
            logits, new_cache = self._decode_step(context, feed, cache if use_cache else None)
            cache = new_cache if use_cache else None
            last = logits[:, -1].float().masked_fill(begin_mask if step == 0 else suppress_mask, float("-inf"))
            logprobs = F.log_softmax(last, dim=-1)
            token = last.argmax(-1)
            token_lp = logprobs.gather(-1, token[:, None])[:, 0]
            token = torch.where(finished, torch.full_like(token, eos), token)
            token_lp = torch.where(finished, torch.zeros_like(token_lp), token_lp)
            new_tokens.append(token)
            new_logprobs.append(token_lp)
            seq = torch.cat([seq, token[:, None]], dim=1)
            finished |= token == eos
            if finished.all():
                break
        tokens = torch.stack(new_tokens, 1) if new_tokens else prompt[:, :0]
        lps = torch.stack(new_logprobs, 1) if new_logprobs else torch.zeros(batch, 0, device=device)
        return GenerationOutput(sequences=seq, tokens=tokens, logprobs=lps, finished=finished)
