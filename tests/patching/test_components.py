"""Component strings (hooked_asr/patching/components.py): each maps to one hook and head."""

from __future__ import annotations

import pytest

from hooked_asr.patching import ComponentError, components, parse_component


def test_component_strings_map_to_hooks_and_heads(model):
    c = parse_component(model, "decoder.blocks.1.cross_attn.head.3")
    assert (c.hook_name, c.head, c.layer, c.kind, c.stack) == (
        "decoder.blocks.1.cross_attn.hook_z",
        3,
        1,
        "cross_attn",
        "decoder",
    )
    assert parse_component(model, "encoder.blocks.0.attn").hook_name == "encoder.blocks.0.hook_attn_out"
    assert parse_component(model, "decoder.blocks.0.cross_attn").hook_name == "decoder.blocks.0.hook_cross_attn_out"
    assert parse_component(model, "encoder.blocks.1.mlp").hook_name == "encoder.blocks.1.hook_mlp_out"
    assert parse_component(model, "decoder.blocks.0.attn.head.2").hook_name == "decoder.blocks.0.attn.hook_z"
    assert parse_component(model, "encoder.hook_out").head is None


@pytest.mark.parametrize(
    "bad, says",
    [
        ("decoder.blocks.7.mlp", "the decoder has 2 blocks (0-1)"),
        ("encoder.blocks.0.cross_attn", "lacks"),
        ("decoder.blocks.0.attn.head.4", "the decoder has 4 heads (0-3)"),
        ("decoder.blocks.0.mlp.head.1", "cannot parse"),
        ("decoder.blocks.0.hook_attn", "did you mean"),
    ],
)
def test_bad_components_are_explained(model, bad, says):
    with pytest.raises(ComponentError, match=bad.replace(".", r"\.")) as e:
        parse_component(model, bad)
    assert says in str(e.value)


def test_components_enumerates_every_head_and_mlp(model):
    L, H = 2, 4  # en-80mel: 2 layers, 4 heads in both stacks
    comps = components(model)
    assert len(comps) == L * (H + 1) + L * (2 * H + 1)
    assert len({c.name for c in comps}) == len(comps)
    whole = components(model, heads=False)
    assert [c.name for c in whole if c.stack == "decoder" and c.layer == 0] == [
        "decoder.blocks.0.attn",
        "decoder.blocks.0.cross_attn",
        "decoder.blocks.0.mlp",
    ]
    assert {c.kind for c in components(model, kinds=["cross_attn"])} == {"cross_attn"}
