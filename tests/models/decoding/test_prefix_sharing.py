"""Sharing the clean run's prefix (``generate_recording_prefix`` / ``generate_from_prefix``) changes no result:
tokens and log-probs equal the plain run's for rows that leave the clean tokens and rows that
never do, mixed in one batch; blocks below the start layer really are skipped while rows match;
what cannot be shared is refused (tiny random Whisper; one real tiny.en sweep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.models.decoding import generate_from_prefix, generate_recording_prefix
from tests.conftest import make_hf_whisper

N_NEW = 10


@pytest.fixture(scope="module")
def model():
    from hooked_asr import HookedWhisper

    return HookedWhisper.from_hf(make_hf_whisper("v3-128mel"))  # 3 decoder layers


@pytest.fixture(scope="module")
def setup(model):
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames, generator=g)
    prompt = [model.cfg.decoder_start_token_id]
    kw = model.generation_kwargs()
    clean = generate_recording_prefix(model, feats, prompt, max_new_tokens=N_NEW, **kw)
    return feats, prompt, kw, clean


def _row_hooks(model, layer: int, d_model: int) -> list:
    """Row 0: untouched; row 1: pushed hard from step 3 on (leaves the clean tokens mid-way); row 2:
    pushed from the first step; row 3: nudged by 1e-4 (keeps the clean tokens)."""
    g = torch.Generator().manual_seed(7)
    push = 30.0 * torch.randn(d_model, generator=g)

    def fn(x, hook):
        step = model.decoding_state.step
        x = x.clone()
        if step >= 3:
            x[1] += push
        x[2] += push
        x[3] += 1e-4 * push
        return x

    return [(f"decoder.blocks.{layer}.hook_mlp_out", fn)]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_shared_prefix_gives_the_plain_runs_tokens_and_logprobs(model, setup, layer):
    feats, prompt, kw, clean = setup
    n = 4
    batch = feats.expand(n, -1, -1)
    with model.hooks(fwd_hooks=_row_hooks(model, layer, model.cfg.decoder.d_model)):
        plain = model.generate(batch, prompt, max_new_tokens=N_NEW + 4, **kw)
        shared = generate_from_prefix(model, clean.prefix_cache, layer, batch, prompt, max_new_tokens=N_NEW + 4, **kw)
    assert shared.tokens.tolist() == plain.tokens.tolist()
    torch.testing.assert_close(shared.logprobs, plain.logprobs, atol=1e-4, rtol=0)
    # guard: the rows do what they are meant to, so both kinds of row are checked
    c = clean.tokens[0].tolist()
    rows = plain.tokens.tolist()
    assert rows[0][: len(c)] == c and rows[3][: len(c)] == c
    assert rows[1][:3] == c[:3] and rows[1] != rows[0]
    assert rows[2][0] != c[0] or rows[2] != rows[0]


def test_matched_rows_skip_the_blocks_below_the_start(model, setup):
    """Count the rows each block processes (torch hooks on the modules): with the prefix shared,
    block 0 runs only the rows that have left the clean tokens; blocks >= l run every row."""
    feats, prompt, kw, clean = setup
    batch = feats.expand(4, -1, -1)
    seen: dict[int, int] = {}

    def count(i):
        def pre(mod, args, kwargs):
            seen[i] = seen.get(i, 0) + args[0].shape[0] * args[0].shape[1]

        return pre

    handles = [b.register_forward_pre_hook(count(i), with_kwargs=True) for i, b in enumerate(model.decoder.blocks)]
    try:
        with model.hooks(fwd_hooks=_row_hooks(model, 1, model.cfg.decoder.d_model)):
            model.generate(batch, prompt, max_new_tokens=N_NEW, **kw)
            plain, seen = dict(seen), {}
            generate_from_prefix(model, clean.prefix_cache, 1, batch, prompt, max_new_tokens=N_NEW, **kw)
    finally:
        for h in handles:
            h.remove()
    assert seen[1] == plain[1] and seen[2] == plain[2]
    assert 0 < seen[0] < plain[0] / 2  # rows 0 and 3 never run block 0; row 1 only after it diverges


def test_what_cannot_share_the_prefix_is_refused(model, setup):
    feats, prompt, kw, clean = setup
    batch = feats.expand(2, -1, -1)
    pre = dict(max_new_tokens=3, **kw)

    def shared(p=prompt, **more):
        return generate_from_prefix(model, clean.prefix_cache, 1, batch, p, **pre, **more)

    with pytest.raises(ValueError, match="num_beams"):
        shared(num_beams=2)
    with pytest.raises(ValueError, match="use_cache=False"):
        shared(use_cache=False)
    with pytest.raises(ValueError, match="decoder.blocks.0"):
        with model.hooks(fwd_hooks=[("decoder.blocks.0.hook_mlp_out", lambda x, hook: x)]):
            shared()
    with pytest.raises(ValueError, match="hook_embed"):
        with model.hooks(fwd_hooks=[("decoder.hook_embed", lambda x, hook: x + 1.0)]):
            shared()
    with pytest.raises(ValueError, match="prompt"):
        shared(prompt + [5])
    with pytest.raises(ValueError, match="one clean row"):
        generate_recording_prefix(model, batch, prompt, max_new_tokens=3, **kw)
    assert model._prefix_use is None  # a refused call leaves plain generate plain
    torch.testing.assert_close(model.generate(feats, prompt, max_new_tokens=N_NEW, **kw).logprobs, clean.logprobs)


def test_generate_has_no_sweep_only_arguments(model):
    import inspect

    params = inspect.signature(model.generate).parameters
    assert not {"clean_prefix", "start_at_layer", "return_prefix_cache"} & set(params)
    assert len([p for p in params.values() if p.kind is p.KEYWORD_ONLY]) == 16  # 19 with the sweep-only three


def test_a_hooked_cross_attention_key_is_recomputed_and_seen(model, setup):
    """Layers whose cross-attention keys are hooked compute them (the hook fires, its patch holds);
    the others read the clean run's."""
    feats, prompt, kw, clean = setup
    batch = feats.expand(2, -1, -1)
    fired = []

    def scale_row1(x, hook):
        fired.append(x.shape[0])
        x = x.clone()
        x[1] *= 3.0
        return x

    hooks = [("decoder.blocks.2.cross_attn.hook_k", scale_row1)]
    with model.hooks(fwd_hooks=hooks):
        plain = model.generate(batch, prompt, max_new_tokens=N_NEW, **kw)
        shared = generate_from_prefix(model, clean.prefix_cache, 2, batch, prompt, max_new_tokens=N_NEW, **kw)
    assert fired == [2, 2]
    assert shared.tokens.tolist() == plain.tokens.tolist()
    torch.testing.assert_close(shared.logprobs, plain.logprobs, atol=1e-4, rtol=0)
    assert plain.tokens[1].tolist() != plain.tokens[0].tolist()  # the patch changes the transcript


def test_generation_sweep_with_the_prefix_equals_the_plain_loop(model, setup):
    """The sweep's metric values: decoder components of every layer, batched (prefix shared from
    each chunk's lowest layer) vs the plain one-at-a-time loop (whole model per row)."""
    from hooked_asr.patching import SweepItem, components, sweep

    feats = setup[0]
    items = [SweepItem("a", feats, reference=torch.roll(feats, 7, dims=-1))]
    comps = components(model, stacks=["decoder"], heads=False) + components(
        model, kinds=["attn"], stacks=["decoder"], layers=[2]
    )
    kw = dict(metrics=["changed", "n_tokens", "wer_delta"], missing="keep", max_new_tokens=N_NEW, progress=False)
    fast = sweep(model, items, comps, "interpolate", 1.0, batch_size=5, **kw)
    plain = sweep(model, items, comps, "interpolate", 1.0, batch_size=1, share_encoder=False, **kw)
    assert fast.table["value"].tolist() == plain.table["value"].tolist()
    changed = fast.table.query("metric == 'changed'")["value"].to_numpy()
    assert 0 < changed.sum() < len(changed)  # rows that diverge and rows that do not


@pytest.mark.slow
def test_real_tiny_en_shared_prefix_equals_plain_generate(whisper_tiny_en):
    from hooked_asr.datasets.espeak import synthesize

    model = whisper_tiny_en
    feats = model.prepare_features(synthesize("The quick brown fox jumps over the lazy dog."))["input_features"]
    prompt, kw = model.sot_sequence(), model.generation_kwargs()
    clean = generate_recording_prefix(model, feats, prompt, max_new_tokens=20, **kw)
    batch = feats.expand(4, -1, -1)
    with model.hooks(fwd_hooks=_row_hooks(model, 2, model.cfg.decoder.d_model)):
        plain = model.generate(batch, prompt, max_new_tokens=24, **kw)
        shared = generate_from_prefix(model, clean.prefix_cache, 2, batch, prompt, max_new_tokens=24, **kw)
    assert shared.tokens.tolist() == plain.tokens.tolist()
    torch.testing.assert_close(shared.logprobs, plain.logprobs, atol=1e-4, rtol=0)
    c = clean.tokens[0].tolist()
    assert plain.tokens[0].tolist()[: len(c)] == c and plain.tokens[1].tolist() != c
