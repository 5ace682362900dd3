"""The SAE paper's feature kinds, assigned from a feature's top words (rules, one case each)."""

from hooked_asr.sae.evaluate import FEATURE_CATEGORIES, feature_category


def test_each_rule_gives_its_kind():
    assert feature_category("non-speech (6/8 top frames in silence/padding)", ["", "", "a"]) == "non-linguistic"
    assert feature_category("positional (frame ~3, t~0.07s)", ["the", "cat", "we"]) == "positional"
    assert feature_category("word 'coffee' (5/8)", ["coffee"] * 5 + ["cup", "hot", "tea"]) == "lexical"
    assert feature_category("mixed", ["walking", "talking", "singing", "cat"]) == "morphological"
    assert feature_category("mixed", ["apple", "banana", "mango", "shirt"]) == "semantic"
    assert (
        feature_category("mixed", ["ship", "shop", "shoe", "dog"], phonemes=["ʃɪp", "ʃɒp", "ʃuː", "dɒɡ"]) == "phonetic"
    )
    assert feature_category("mixed", ["ship", "dog", "tree", "run"], phonemes=["ʃɪp", "dɒɡ", "tɹiː", "ɹʌn"]) == "mixed"
    # the same word twice is not morphology; a shared class beats a coincidental suffix only when the suffix is rare
    assert feature_category("mixed", ["walking", "walking", "cat", "dog"]) == "lexical"
    assert set(FEATURE_CATEGORIES) >= {
        "phonetic",
        "semantic",
        "morphological",
        "positional",
        "lexical",
        "non-linguistic",
    }
