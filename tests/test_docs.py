"""docs/architecture.md against the code: every hook name it spells exists on a model, every hook
of both models is named there, and the capability table lists every declared capability."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from hooked_asr import HookedQwen2Audio, HookedWhisper
from hooked_asr.models.base import ModelCapabilities
from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def hook_names():
    w = HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))
    q = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    return {re.sub(r"blocks\.\d+\.", "blocks.{l}.", n) for n in [*w.hook_dict, *q.hook_dict]}


def test_every_hook_name_in_the_page_exists(hook_names):
    text = DOC.read_text()
    spelt = set(re.findall(r"`((?:encoder|decoder|projector)\.(?:[\w{}]+\.)*hook_\w+)`", text))
    assert len(spelt) > 20
    assert not spelt - hook_names, f"docs/architecture.md names hooks no model has: {sorted(spelt - hook_names)}"


def test_every_hook_of_both_models_is_in_the_page(hook_names):
    text = DOC.read_text()
    missing = []
    for name in sorted(hook_names):
        parts = name.split(".")
        # Named in full, or as the sibling of a name in the same table cell (`ln2.hook_scale`, `hook_v`).
        if name not in text and f"`{'.'.join(parts[-2:])}`" not in text and f"`{parts[-1]}`" not in text:
            missing.append(name)
    assert not missing, f"hooks missing from docs/architecture.md: {missing}"


def test_the_capability_table_lists_every_capability():
    text = DOC.read_text()
    assert not [f.name for f in fields(ModelCapabilities) if f"| `{f.name}` |" not in text]
