"""Word category (fruits, clothing, ...) said in fixed carrier sentences by one voice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hooked_asr.datasets.labelled._build import check_choices, check_n, finish, render
from hooked_asr.datasets.labelled.dataset import LabelledDataset
from hooked_asr.datasets.labelled.texts import CATEGORY_WORDS
from hooked_asr.datasets.labelled.voices import check_voices

# other spellings users reach for
_CATEGORY_ALIASES = {"body parts": "body_parts", "body-parts": "body_parts", "colours": "colors", "fruit": "fruits"}


def semantic_dataset(
    categories: Sequence[str] = ("fruits", "clothing"),
    n_per_class: int = 12,
    seed: int = 0,
    carrier: str | Sequence[str] = "I really like the {word}.",
    voice: str = "en-us",
    rate: int = 160,
    progress: bool = True,
) -> LabelledDataset:
    """Word category (label ``k`` = ``categories[k]``) in fixed carrier sentences.

    Everything but the word is fixed: one voice, one rate, the carrier text(s). Items are
    distinct (word, carrier) combinations drawn without replacement by ``seed``; with one
    carrier at most ``len(CATEGORY_WORDS[c])`` (16) per class. ``carrier`` may be a list
    of templates (each with ``{word}``) to allow more items."""
    cats = [_CATEGORY_ALIASES.get(c, c) for c in ([categories] if isinstance(categories, str) else categories)]
    cats = check_choices("category", cats, CATEGORY_WORDS)
    n = check_n(n_per_class)
    carriers = [carrier] if isinstance(carrier, str) else list(carrier)
    for c in carriers:
        if c.count("{word}") != 1:
            raise ValueError(f"carrier {c!r} must contain '{{word}}' exactly once")
    check_voices([voice])
    rng = np.random.default_rng(seed)
    picks = {}
    for c in cats:
        combos = [(w, t) for t in range(len(carriers)) for w in CATEGORY_WORDS[c]]
        if n > len(combos):
            raise ValueError(
                f"category {c!r} has {len(CATEGORY_WORDS[c])} words x {len(carriers)} carrier(s) = "
                f"{len(combos)} distinct items; n_per_class={n} is too many (pass more carriers)"
            )
        picks[c] = [combos[int(i)] for i in rng.permutation(len(combos))[:n]]
    records = []
    for j in range(n):
        for label, c in enumerate(cats):
            word, t = picks[c][j]
            records.append(
                {
                    "label": label,
                    "label_name": c,
                    "word": word,
                    "carrier": carriers[t],
                    "text": carriers[t].format(word=word),
                    "voice": voice,
                    "rate": int(rate),
                    "group": j,
                }
            )
    audio = render(records, progress, "semantic_dataset")
    return finish(
        "semantic_dataset",
        {"categories": cats, "n_per_class": n, "seed": seed, "carrier": carriers, "voice": voice, "rate": rate},
        records,
        audio,
        cats,
    )


__all__ = ["semantic_dataset"]
