"""Token similarity: how close each layer's top-k candidates are to the finally chosen token.

Meaning: cosine of the token embeddings ``W_E``. Sound: the phoneme error rate
(:func:`hooked_asr.text.phoneme_error_rate`) of their espeak-ng pronunciations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float

from hooked_asr.lens.logit import LogitLensResult, token_string
from hooked_asr.text import phoneme_error_rate


def _phonemizer(voice: str) -> Callable[[str], str]:
    try:
        from hooked_asr.datasets.espeak import phonemize
    except ImportError as err:
        raise RuntimeError(
            "phoneme similarity needs hooked_asr.datasets.espeak.phonemize (espeak-ng through "
            f"espeakng-loader), which could not be imported ({err}); install espeakng-loader "
            "(pip install espeakng-loader) or pass phonemes=False"
        ) from err

    def run(text: str) -> str:
        out = phonemize(text, voice=voice)
        return " ".join(out) if isinstance(out, (list, tuple)) else str(out)

    return run


@dataclass
class TokenSimilarity:
    """Similarity between the chosen token and each layer's top-k candidates.

    ``cosine[l, s, j]`` = cos(W_E[chosen_s], W_E[topk_ids[l, s, j]]); ``per[l, s, j]`` the phoneme
    error rate of candidate j's pronunciation against the chosen token's. Candidates equal to the
    chosen token, and tokens without letters, are NaN when ``exclude_chosen``.
    """

    cosine: Float[torch.Tensor, "layer step k"]
    per: Float[torch.Tensor, "layer step k"] | None

    def by_layer(self) -> dict[str, list[float]]:
        out = {"cosine": torch.nanmean(self.cosine.flatten(1), dim=1).tolist()}
        if self.per is not None:
            out["per"] = torch.nanmean(self.per.flatten(1), dim=1).tolist()
        return out


@torch.no_grad()
def token_similarity(
    model: Any,
    result: LogitLensResult,
    k: int = 5,
    phonemes: bool = True,
    voice: str = "en-us",
    exclude_chosen: bool = True,
) -> TokenSimilarity:
    """Meaning (embedding cosine) and sound (phoneme error rate) of the top-k candidates per layer
    relative to the chosen token. ``phonemes=True`` needs espeak-ng (a clear error otherwise)."""
    ids = result.topk_ids[..., :k]
    if ids.shape[-1] < k:
        raise ValueError(f"the lens kept top-{ids.shape[-1]}; rerun it with top_k >= {k}")
    W_E = model.decoder.W_E.detach().float()
    emb = F.normalize(W_E, dim=-1)
    chosen = result.tokens.to(W_E.device)
    cos = (emb[ids.to(W_E.device)] * emb[chosen][None, :, None]).sum(-1).cpu()
    same = ids == result.tokens[None, :, None]
    if exclude_chosen:
        cos = cos.masked_fill(same, math.nan)
    per = None
    if phonemes:
        phon = _phonemizer(voice)
        memo: dict[int, str | None] = {}

        def pron(t: int) -> str | None:
            if t not in memo:
                text = token_string(model, t).strip()
                memo[t] = phon(text) if any(c.isalpha() for c in text) and not text.startswith("<") else None
            return memo[t]

        per = torch.full(ids.shape, math.nan)
        for s, c in enumerate(result.tokens.tolist()):
            ref = pron(c)
            if ref is None:
                continue
            for l in range(ids.shape[0]):
                for j, t in enumerate(ids[l, s].tolist()):
                    if exclude_chosen and t == c:
                        continue
                    hyp = pron(t)
                    if hyp is not None:
                        per[l, s, j] = phoneme_error_rate(ref, hyp)
    return TokenSimilarity(cosine=cos, per=per)


__all__ = ["TokenSimilarity", "token_similarity"]
