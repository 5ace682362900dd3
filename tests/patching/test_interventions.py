"""Interventions (hooked_asr/patching/interventions.py): the properties that make a patch mean
what it says, on Whisper and on Qwen2-Audio.

Each test builds its expectation independently (a second forward, the cached activations,
the head-explicit weights) rather than trusting the intervention code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.patching import (
    MissingPositionError,
    SweepItem,
    components,
    generate_with_interventions,
    interpolate,
    mean_ablate,
    mean_activations,
    parse_component,
    patch,
    patched,
    record_reference,
    run_with_interventions,
    sweep,
    zero_ablate,
)


def _n_hooks(model):
    return sum(len(hp.fwd_hooks) + len(hp._forward_hooks) for hp in model.hook_dict.values())


def _cache(model, kwargs, names):
    return model.run_with_cache(**kwargs, names_filter=names)


# ---- core properties --------------------------------------------------------------------
def test_alpha_zero_changes_nothing(model, tf):
    t, r = tf
    comps = components(model)
    cache = record_reference(model, r.kwargs, comps)
    clean = model(**t.kwargs)
    out = run_with_interventions(model, [interpolate(c, cache, 0.0) for c in comps], **t.kwargs)
    assert torch.equal(out, clean)


def test_patching_with_own_cache_changes_nothing(model, tf, feats):
    t, _ = tf
    comps = components(model) + components(model, heads=False)
    own = record_reference(model, t.kwargs, comps)
    clean = model(**t.kwargs)
    for alpha in (1.0, 0.5, 2.0):
        out = run_with_interventions(model, [interpolate(c, own, alpha) for c in comps], **t.kwargs)
        torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-5)
    # and during generation, with the cache recorded on the clean transcript
    prompt = t.tokens[0, : t.prompt_len]
    gen = model.generate(feats[0], prompt, max_new_tokens=8)
    own = record_reference(model, model.teacher_forced_inputs(feats[0], gen.tokens[0].tolist()).kwargs, comps)
    out = generate_with_interventions(
        model, [patch(c, own) for c in comps], input_features=feats[0], prompt_ids=prompt, max_new_tokens=8
    )
    assert torch.equal(out.tokens, gen.tokens)


def test_patching_a_whole_stack_reproduces_the_reference_run(model, tf):
    t, r = tf
    last = model.n_layers["encoder"] - 1
    names = [
        "encoder.hook_out",
        f"encoder.blocks.{last}.hook_resid_post",
        f"decoder.blocks.{model.n_layers['decoder'] - 1}.hook_resid_post",
    ]
    ref_logits, ref = _cache(model, r.kwargs, names)
    # every encoder frame of the last block's output -> the encoder output is the reference's
    with patched(model, [patch(names[1], ref)]) as tr:
        tr.reset()
        _, c = _cache(model, t.kwargs, ["encoder.hook_out"])
    torch.testing.assert_close(c["encoder.hook_out"], ref["encoder.hook_out"], atol=1e-5, rtol=1e-5)
    # the encoder output -> the decoder sees the reference audio: logits are the reference run's
    out = run_with_interventions(model, [patch("encoder.hook_out", ref)], **t.kwargs)
    torch.testing.assert_close(out, ref_logits, atol=1e-5, rtol=1e-5)
    # the decoder's last residual at every position -> logits are the reference run's
    out = run_with_interventions(model, [patch(names[2], ref)], **t.kwargs)
    torch.testing.assert_close(out, ref_logits, atol=1e-5, rtol=1e-5)


def test_patching_the_encoder_output_during_generation_gives_the_reference_transcript(model, feats):
    f, fr = feats
    prompt = model.teacher_forced_inputs(f).tokens[0]
    ref_gen = model.generate(fr, prompt, max_new_tokens=8)
    ref = record_reference(model, {"input_features": fr, "decoder_input_ids": prompt[None]}, ["encoder.hook_out"])
    out = generate_with_interventions(
        model, [patch("encoder.hook_out", ref)], input_features=f, prompt_ids=prompt, max_new_tokens=8
    )
    assert torch.equal(out.tokens, ref_gen.tokens)


@pytest.mark.parametrize(
    "comp", ["decoder.blocks.1.cross_attn.head.2", "encoder.blocks.0.attn.head.1", "decoder.blocks.0.attn.head.3"]
)
def test_head_patch_changes_only_that_head(model, tf, comp):
    t, r = tf
    c = parse_component(model, comp)
    stack, layer, kind = c.stack, c.layer, c.kind
    out_hook = f"{stack}.blocks.{layer}.hook_{'cross_attn' if kind == 'cross_attn' else 'attn'}_out"
    names = [c.hook_name, out_hook]
    _, clean = _cache(model, t.kwargs, names)
    _, ref = _cache(model, r.kwargs, names)
    with patched(model, [patch(comp, ref)]) as tr:
        tr.reset()
        _, new = _cache(model, t.kwargs, names)
    z, z0, zr = new[c.hook_name], clean[c.hook_name], ref[c.hook_name]
    others = [h for h in range(z.shape[2]) if h != c.head]
    assert torch.equal(z[:, :, others], z0[:, :, others])
    assert torch.equal(z[:, :, c.head], zr[:, :, c.head])
    # the block output moves by exactly (z_ref,h - z_h) W_O[h]
    attn = getattr(getattr(model, stack).blocks[layer], kind)
    want = clean[out_hook] + (zr[:, :, c.head] - z0[:, :, c.head]) @ attn.W_O[c.head]
    torch.testing.assert_close(new[out_hook], want, atol=1e-5, rtol=1e-5)


def test_interpolation_zero_and_mean_ablation_values(model, tf, feats):
    t, r = tf
    name = "encoder.blocks.1.hook_mlp_out"
    _, clean = _cache(model, t.kwargs, [name, "decoder.blocks.0.attn.hook_z"])
    _, ref = _cache(model, r.kwargs, [name])
    for alpha in (0.3, 1.0, 2.5):
        with patched(model, [interpolate("encoder.blocks.1.mlp", ref, alpha)]):
            _, c = _cache(model, t.kwargs, [name])
        torch.testing.assert_close(c[name], (1 - alpha) * clean[name] + alpha * ref[name], atol=1e-6, rtol=1e-5)
    with patched(model, [zero_ablate("encoder.blocks.1.mlp")]):
        _, c = _cache(model, t.kwargs, [name])
    assert torch.equal(c[name], torch.zeros_like(c[name]))
    # mean over two reference inputs and all positions, per head
    kw = [t.kwargs, r.kwargs]
    means = mean_activations(model, kw, ["decoder.blocks.0.attn.head.1"])
    zs = torch.cat(
        [_cache(model, k, ["decoder.blocks.0.attn.hook_z"])[1]["decoder.blocks.0.attn.hook_z"] for k in kw], 1
    )
    with patched(model, [mean_ablate("decoder.blocks.0.attn.head.1", means)]) as tr:
        tr.reset()
        _, c = _cache(model, t.kwargs, ["decoder.blocks.0.attn.hook_z"])
    z = c["decoder.blocks.0.attn.hook_z"]
    torch.testing.assert_close(
        z[:, :, 1], zs[:, :, 1].mean(1, keepdim=True).expand_as(z[:, :, 1]), atol=1e-6, rtol=1e-5
    )
    assert torch.equal(z[:, :, 0], clean["decoder.blocks.0.attn.hook_z"][:, :, 0])


def test_alpha_must_be_non_negative(model):
    with pytest.raises(ValueError, match="alpha must be a finite real >= 0"):
        interpolate("encoder.blocks.0.mlp", {}, -0.5)


def test_rows_and_positions_restrict_the_patch(model, tf):
    t, r = tf
    name = "decoder.blocks.0.hook_mlp_out"
    kw2 = {k: v.expand(2, *v.shape[1:]) for k, v in t.kwargs.items()}
    _, clean = _cache(model, kw2, [name])
    _, ref = _cache(model, r.kwargs, [name])
    with patched(model, [patch("decoder.blocks.0.mlp", ref, rows=[1], positions=[2, 4])]) as tr:
        tr.reset()
        _, c = _cache(model, kw2, [name])
    a = c[name]
    assert torch.equal(a[0], clean[name][0])
    assert torch.equal(a[1, [2, 4]], ref[name][0, [2, 4]])
    keep = [p for p in range(a.shape[1]) if p not in (2, 4)]
    assert torch.equal(a[1, keep], clean[name][1, keep])


# ---- generation -------------------------------------------------------------------------
def test_decoder_patch_is_the_same_with_and_without_kv_cache(model, feats, tf):
    f, fr = feats
    prompt = tf[0].tokens[0, : tf[0].prompt_len]
    clean = model.generate(f, prompt, max_new_tokens=10)
    ref = record_reference(
        model,
        model.teacher_forced_inputs(fr, clean.tokens[0].tolist()).kwargs,
        ["decoder.blocks.1.attn.head.0", "decoder.blocks.0.mlp"],
    )
    ivs = [
        patch("decoder.blocks.1.attn.head.0", ref, missing="keep"),
        interpolate("decoder.blocks.0.mlp", ref, 0.7, missing="keep"),
    ]
    a = generate_with_interventions(model, ivs, input_features=f, prompt_ids=prompt, max_new_tokens=10, use_cache=True)
    b = generate_with_interventions(model, ivs, input_features=f, prompt_ids=prompt, max_new_tokens=10, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, clean.tokens)  # the patch did something


def test_hooks_see_absolute_positions_during_cached_generation(model, feats, tf):
    f, _ = feats
    prompt = tf[0].tokens[0, : tf[0].prompt_len]
    n_new = 6
    # a reference whose value at position p is p: what a hook gets tells which position it was given
    d = model.cfg.decoder.d_model
    ref = {
        "decoder.blocks.0.hook_mlp_out": torch.arange(len(prompt) + n_new, dtype=torch.float)[None, :, None].expand(
            1, -1, d
        )
    }
    seen = []
    with patched(model, [patch("decoder.blocks.0.mlp", ref)]):
        with model.hooks(
            fwd_hooks=[("decoder.blocks.0.hook_mlp_out", lambda a, hook: seen.append(a[0, :, 0].tolist()))]
        ):
            model.generate(f, prompt, max_new_tokens=n_new, eos_token_id=-1)
    flat = [p for call in seen for p in call]
    assert flat == list(range(len(prompt) + n_new - 1))


def test_missing_positions_raise_or_are_kept(model, feats, tf):
    f, fr = feats
    t = tf[0]
    prompt = t.tokens[0, : t.prompt_len]
    short = record_reference(model, model.teacher_forced_inputs(fr, [5, 6]).kwargs, ["decoder.blocks.0.mlp"])
    before = _n_hooks(model)
    with pytest.raises(MissingPositionError, match="missing='keep'"):
        generate_with_interventions(
            model,
            [patch("decoder.blocks.0.mlp", short)],
            input_features=f,
            prompt_ids=prompt,
            max_new_tokens=8,
            eos_token_id=-1,
        )
    assert _n_hooks(model) == before
    # teacher-forced: positions past the reference keep their clean values
    name = "decoder.blocks.0.hook_mlp_out"
    _, clean = _cache(model, t.kwargs, [name])
    with patched(model, [patch("decoder.blocks.0.mlp", short, missing="keep")]) as tr:
        tr.reset()
        _, c = _cache(model, t.kwargs, [name])
    n = short[name].shape[1]
    assert torch.equal(c[name][:, :n], short[name])
    assert torch.equal(c[name][:, n:], clean[name][:, n:])


def test_no_hook_remains_after_an_exception(model, tf):
    t, r = tf
    ref = record_reference(model, r.kwargs, ["encoder.blocks.0.mlp"])
    before = _n_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with patched(model, [patch("encoder.blocks.0.mlp", ref), zero_ablate("decoder.blocks.1.cross_attn.head.0")]):
            assert _n_hooks(model) > before
            raise RuntimeError("boom")
    assert _n_hooks(model) == before

    def bad(comp, rows, cache):  # an intervention whose hook raises mid-forward
        iv = zero_ablate(comp, rows=[99])
        return iv

    with pytest.raises(IndexError, match="row 99"):
        run_with_interventions(model, [bad("decoder.blocks.0.mlp", None, None)], **t.kwargs)
    assert _n_hooks(model) == before


# ---- the same properties on Qwen2-Audio (audio as a decoder prefix, rotary, grouped heads) --
@pytest.fixture(scope="module")
def qwen():
    from hooked_asr import HookedQwen2Audio
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    m = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    g = torch.Generator().manual_seed(0)
    shape = (1, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames)
    return m, torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_qwen2_audio_patching_properties(qwen):
    from hooked_asr.patching.item_runs import generation_settings

    m, f, fr = qwen
    t, r = m.teacher_forced_inputs(f, [10, 11, 12]), m.teacher_forced_inputs(fr, [10, 11, 12])
    comps = components(m)
    assert not any(c.kind == "cross_attn" for c in comps)  # the audio is a prefix: no cross-attention
    clean = m(**t.kwargs)
    own = record_reference(m, t.kwargs, comps)
    torch.testing.assert_close(run_with_interventions(m, [patch(c, own) for c in comps], **t.kwargs), clean)
    assert torch.equal(run_with_interventions(m, [interpolate(c, own, 0.0) for c in comps], **t.kwargs), clean)
    # everything the decoder reads of the audio -> the reference run's logits
    ref = record_reference(m, r.kwargs, ["projector.hook_out"])
    torch.testing.assert_close(run_with_interventions(m, [patch("projector.hook_out", ref)], **t.kwargs), m(**r.kwargs))
    # decoder patches index absolute positions: cached and uncached decoding agree
    gk, _ = generation_settings(m)
    prompt = t.tokens[0, : t.prompt_len]
    dref = record_reference(m, r.kwargs, ["decoder.blocks.1.attn.head.3"])
    ivs = [interpolate("decoder.blocks.1.attn.head.3", dref, 3.0, missing="keep")]
    a = generate_with_interventions(m, ivs, input_features=f, prompt_ids=prompt, max_new_tokens=6, **gk)
    b = generate_with_interventions(
        m, ivs, input_features=f, prompt_ids=prompt, max_new_tokens=6, use_cache=False, **gk
    )
    assert torch.equal(a.tokens, b.tokens)
    # batched sweep (encoder shared for decoder chunks) equals one at a time
    items = [SweepItem("q", f, reference=fr)]
    kw = dict(mode="teacher_forced", metrics=["logprob"], max_new_tokens=5, progress=False)
    x = sweep(m, items, comps, "interpolate", 0.7, batch_size=32, **kw)
    y = sweep(m, items, comps, "interpolate", 0.7, batch_size=1, share_encoder=False, **kw)
    np.testing.assert_allclose(x.table["value"], y.table["value"], atol=1e-4)
