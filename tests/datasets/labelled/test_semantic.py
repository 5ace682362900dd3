"""Word-category sets: everything but the word is fixed."""

from __future__ import annotations

import numpy as np

from hooked_asr.datasets.labelled import CATEGORY_WORDS, SENTENCES, semantic_dataset


def test_semantic_differs_only_in_the_word():
    ds = semantic_dataset(("animals", "vehicles", "body parts"), n_per_class=4, seed=0, progress=False)
    assert ds.label_names == ["animals", "vehicles", "body_parts"]
    np.testing.assert_array_equal(ds.labels(), [0, 1, 2] * 4)
    words = set()
    for i in range(len(ds)):
        it = ds[i]
        assert it["word"] in CATEGORY_WORDS[it["label_name"]]
        assert it["text"] == f"I really like the {it['word']}."
        assert (it["voice"], it["rate"], it["carrier"]) == ("en-us", 160, "I really like the {word}.")
        words.add(it["word"])
    assert len(words) == len(ds)
    assert all(len(v) >= 12 for v in CATEGORY_WORDS.values()) and len(CATEGORY_WORDS) >= 8
    assert len(SENTENCES) >= 40
    two = semantic_dataset(
        n_per_class=20, seed=1, carrier=["I like the {word}.", "Look at the {word} now."], progress=False
    )
    assert len(two) == 40 and {it["carrier"] for it in two.metadata()} == {
        "I like the {word}.",
        "Look at the {word} now.",
    }
