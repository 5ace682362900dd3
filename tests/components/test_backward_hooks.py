"""Backward hooks fire on every hook point, fast paths included, with the explicit path's gradients.

Components skip some hook points when nothing watches them (fused attention skips
``hook_attn_scores`` / ``hook_pattern``, fused layer norm skips ``hook_scale``). "Watches" must
include backward hooks: a gradient hook that never fires is a silent wrong answer.
"""

from __future__ import annotations

import pytest
import torch

from hooked_asr.components.attention import Attention
from hooked_asr.components.norm import LayerNorm
from hooked_asr.hooks import HookPoint
from tests.conftest import make_hf_qwen2_audio, make_hf_whisper, make_tokenizer


def _whisper():
    from hooked_asr import HookedWhisper

    m = HookedWhisper.from_hf(make_hf_whisper("en-80mel"))
    torch.manual_seed(0)
    feats = torch.randn(2, m.cfg.encoder.n_mels, m.cfg.encoder.n_frames)
    ids = torch.tensor([[m.cfg.decoder_start_token_id, 5, 6, 7]] * 2)
    return m, lambda: m(input_features=feats.clone().requires_grad_(), decoder_input_ids=ids)


def _qwen2():
    from hooked_asr import HookedQwen2Audio
    from hooked_asr.components.projector import audio_token_counts

    hf = make_hf_qwen2_audio("gqa")
    m = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    torch.manual_seed(0)
    n_frames = 2 * hf.config.audio_config.max_source_positions
    feats = torch.randn(1, hf.config.audio_config.num_mel_bins, n_frames)
    mask = torch.ones(1, n_frames, dtype=torch.long)
    ids = torch.tensor([m.transcription_prompt(int(audio_token_counts(mask)[1][0])) + [7, 8]])
    return m, lambda: m(input_ids=ids, input_features=feats.clone().requires_grad_(), feature_attention_mask=mask)


def _loss(logits: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (logits * torch.randn(logits.shape, generator=g)).sum()


@pytest.mark.parametrize("build", [_whisper, _qwen2], ids=["whisper", "qwen2-audio"])
def test_backward_hook_on_every_hook_point_sees_the_explicit_paths_gradient(build):
    model, run = build()
    names = list(model.hook_dict)

    # Explicit path: a forward hook on every point keeps each activation's gradient.
    acts: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        x.retain_grad()
        acts[hook.name] = x

    model.zero_grad()
    with model.hooks(fwd_hooks=[(n, keep) for n in names]):
        _loss(run()).backward()
    want = {n: a.grad.clone() for n, a in acts.items() if a.grad is not None}
    want_params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Backward hooks only: no forward hook anywhere, so every fast path is tempted.
    got: dict[str, torch.Tensor] = {}
    model.zero_grad()
    with model.hooks(bwd_hooks=[(n, lambda g, hook: got.setdefault(hook.name, g.clone())) for n in names]):
        _loss(run()).backward()

    assert sorted(got) == sorted(want), f"backward hooks that never fired: {sorted(set(want) - set(got))}"
    for kind in ["attn.hook_pattern", "attn.hook_attn_scores", "ln1.hook_scale"]:
        assert any(n.endswith(kind) for n in got), kind  # the points fast paths skip are covered
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-5, rtol=1e-4, msg=n)
    for n, g in want_params.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize(
    "register",
    [
        lambda hp: hp.add_hook(lambda x, hook: None),
        lambda hp: hp.add_hook(lambda g, hook: None, dir="bwd"),
        lambda hp: hp.register_forward_pre_hook(lambda m, a: None),
        lambda hp: hp.register_full_backward_pre_hook(lambda m, g: None),
    ],
    ids=["fwd", "bwd", "fwd_pre", "bwd_pre"],
)
def test_is_live_counts_every_kind_of_hook(register):
    hp = HookPoint()
    assert not hp.is_live()
    register(hp)
    assert hp.is_live()


@pytest.mark.parametrize(
    "module, point",
    [
        (lambda: Attention(16, 2, causal=True), "hook_pattern"),
        (lambda: Attention(16, 2, causal=True), "hook_attn_scores"),
        (lambda: LayerNorm(16), "hook_scale"),
    ],
)
def test_a_backward_pre_hook_alone_takes_the_explicit_path(module, point):
    torch.manual_seed(0)
    m = module()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    fired = []
    getattr(m, point).register_full_backward_pre_hook(lambda mod, g: fired.append(g[0].shape))
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = m(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert len(fired) == 1


def test_sae_error_term_fast_path_fires_a_backward_hook_on_its_reconstruction():
    # With use_error_term the SAE skips recomputing the clean reconstruction when nothing edits
    # it; a backward hook on hook_sae_recons must still see d(loss)/d(x_hat), as with a forward hook.
    from hooked_asr.sae.model import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=48, architecture="topk", k=6))
    sae.use_error_term = True
    x = torch.randn(3, 16, requires_grad=True)
    w = torch.randn(3, 16)
    kept = {}

    def keep(a, hook):
        a.retain_grad()
        kept["a"] = a

    with sae.hooks(fwd_hooks=[("hook_sae_recons", keep)]):
        (sae(x) * w).sum().backward()
    got = []
    with sae.hooks(bwd_hooks=[("hook_sae_recons", lambda g, hook: got.append(g.clone()))]):
        (sae(x) * w).sum().backward()
    assert len(got) == 1
    torch.testing.assert_close(got[0], kept["a"].grad, atol=1e-6, rtol=0)
