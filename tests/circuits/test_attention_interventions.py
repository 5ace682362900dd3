"""Pattern- and score-level interventions (hooked_asr/patching/interventions.py): a head's attention
masked to a window of frames equals softmax over the remaining keys computed by hand from the
cached q, k, v; a patched pattern gives z = pattern_ref v; masks and pattern patches act the same
with and without the key/value cache during generation."""

from __future__ import annotations

import math

import pytest
import torch

from hooked_asr.patching import (
    attention_site,
    frames_between,
    generate_with_interventions,
    mask_attention,
    mean_activations,
    patch,
    record_reference,
    run_with_interventions,
    zero_ablate,
)
from tests.circuits.conftest import whisper_inputs


def _by_hand_z(q, k, v, keep, causal=False):
    """z for one head from its q [b, q, d], k, v [b, k, d] with keys outside ``keep`` removed."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.zeros(scores.shape[-1], dtype=torch.bool)
    mask[keep] = True
    scores = scores.masked_fill(~mask, float("-inf"))
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def test_cross_attention_mask_equals_softmax_over_the_other_frames(whisper_rand):
    m = whisper_rand
    inputs = whisper_inputs(m)
    window = list(range(10, 20))
    with torch.no_grad():
        _, clean = m.run_with_cache(**inputs)
        iv = mask_attention("decoder.blocks.1.cross_attn.head.2", window)
        from hooked_asr.patching import patched

        with patched(m, [iv]) as tracker:
            tracker.reset()
            _, masked = m.run_with_cache(**inputs)
    keep = [f for f in range(clean["decoder.blocks.1.cross_attn.hook_k"].shape[1]) if f not in window]
    name = "decoder.blocks.1.cross_attn.hook_"
    z = _by_hand_z(masked[name + "q"][:, :, 2], masked[name + "k"][:, :, 2], masked[name + "v"][:, :, 2], keep)
    assert torch.allclose(masked[name + "z"][:, :, 2], z, atol=1e-5)
    assert masked[name + "pattern"][:, 2][..., window].abs().max() == 0
    # Other heads and everything before the site are untouched.
    assert torch.allclose(
        masked[name + "z"][:, :, [0, 1, 3, 4, 5]], clean[name + "z"][:, :, [0, 1, 3, 4, 5]], atol=1e-6
    )
    assert torch.equal(masked["decoder.blocks.1.hook_resid_mid"], clean["decoder.blocks.1.hook_resid_mid"])


def test_pattern_mode_zeroes_weights_without_renormalising(whisper_rand):
    m = whisper_rand
    inputs = whisper_inputs(m)
    with torch.no_grad():
        _, clean = m.run_with_cache(**inputs)
        from hooked_asr.patching import patched

        with patched(m, [mask_attention("encoder.blocks.0.attn", [0, 1, 2], mode="pattern", queries=range(5))]):
            _, masked = m.run_with_cache(**inputs)
    p_clean, p = clean["encoder.blocks.0.attn.hook_pattern"], masked["encoder.blocks.0.attn.hook_pattern"]
    want = p_clean.clone()
    want[:, :, :5, :3] = 0
    assert torch.equal(p, want)
    v = clean["encoder.blocks.0.attn.hook_v"]  # [b, k, head, d]
    assert torch.allclose(masked["encoder.blocks.0.attn.hook_z"], (want @ v.transpose(1, 2)).transpose(1, 2), atol=1e-5)


def test_patched_pattern_gives_z_equal_to_reference_pattern_times_v(whisper_rand):
    m = whisper_rand
    inputs = whisper_inputs(m)
    ref_inputs = whisper_inputs(m, seed=3)
    site = attention_site(m, "decoder.blocks.0.cross_attn.head.4")
    ref = record_reference(m, ref_inputs, [site])
    assert site.hook_name == "decoder.blocks.0.cross_attn.hook_pattern" and site.head == 4
    with torch.no_grad():
        from hooked_asr.patching import patched

        with patched(m, [patch(site, ref)]) as tracker:
            tracker.reset()
            _, out = m.run_with_cache(**inputs)
    v = out["decoder.blocks.0.cross_attn.hook_v"][:, :, 4]
    assert torch.allclose(out["decoder.blocks.0.cross_attn.hook_z"][:, :, 4], ref[site.hook_name][:, 4] @ v, atol=1e-5)
    means = mean_activations(m, [inputs, ref_inputs], [site])
    assert means[site.hook_name].shape == (1, 6, out[site.hook_name].shape[-1])


def test_self_attention_mask_same_with_and_without_kv_cache(whisper_rand):
    """A decoder self-attention mask on token positions 1-2 acts at every generation step the same
    way whether the step sees one new token (cached) or the whole sequence."""
    m = whisper_rand
    feats = whisper_inputs(m, batch=1)["input_features"]
    prompt = [50258, 50259, 50359]
    ivs = [
        mask_attention("decoder.blocks.1.attn", [1, 2]),
        mask_attention("decoder.blocks.0.cross_attn.head.1", frames_between(0.1, 0.5)),
    ]
    outs = [
        generate_with_interventions(m, ivs, input_features=feats, prompt_ids=prompt, max_new_tokens=6, use_cache=c)
        for c in (True, False)
    ]
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    # Teacher-forced on the generated sequence, the masked logits pick the generated tokens.
    logits = run_with_interventions(m, ivs, input_features=feats, decoder_input_ids=outs[0].sequences)
    steps = logits[0, len(prompt) - 1 : -1].argmax(-1)
    assert torch.equal(steps[: outs[0].tokens.shape[1]], outs[0].tokens[0])
    assert not torch.equal(outs[0].sequences, m.generate(feats, prompt, max_new_tokens=6).sequences)


def test_frames_between_and_errors(whisper_rand):
    assert frames_between(1.0, 1.5) == range(50, 75)
    assert frames_between(0.0, 0.03) == range(0, 2)
    m = whisper_rand
    inputs = whisper_inputs(m)
    n_frames = m.cfg.encoder.n_ctx
    with pytest.raises(ValueError, match="every key"):
        run_with_interventions(m, [mask_attention("decoder.blocks.0.cross_attn.head.0", range(n_frames))], **inputs)
    with pytest.raises(ValueError, match="attention or one head"):
        mask_attention("decoder.blocks.0.mlp", [1]).hook(m, None)
    with pytest.raises(ValueError, match="mode must be"):
        mask_attention("decoder.blocks.0.attn", [1], mode="weights")
    # A whole-pattern zero ablation is a site like any other.
    out = run_with_interventions(m, [zero_ablate("decoder.blocks.0.cross_attn.hook_pattern")], **inputs)
    with torch.no_grad():
        _, clean = m.run_with_cache(**inputs)
    assert not torch.allclose(out, clean["decoder.hook_logits"])
