"""HookedWhisper equals Hugging Face's Whisper (eager attention, fp32) on random weights."""

from __future__ import annotations

import torch
from transformers.generation.utils import GenerationMixin

ATOL = 1e-4


def _hf_forward(hf, features, tokens):
    with torch.no_grad():
        return hf(input_features=features, decoder_input_ids=tokens, output_hidden_states=True, output_attentions=True)


def _tokens(hf, batch=2, n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, hf.config.vocab_size, (batch, n), generator=g)


def test_logits_and_every_hidden_state_match_hf(whisper_pair):
    hf, model, features = whisper_pair
    tokens = _tokens(hf)
    ref = _hf_forward(hf, features, tokens)
    with torch.no_grad():
        logits, cache = model.run_with_cache(input_features=features, decoder_input_ids=tokens)
    torch.testing.assert_close(logits, ref.logits, atol=ATOL, rtol=0)
    for stack, hidden in [("encoder", ref.encoder_hidden_states), ("decoder", ref.decoder_hidden_states)]:
        n = model.n_layers[stack]
        assert len(hidden) == n + 1
        # HF: hidden[0] is the block-0 input; hidden[i] the output of block i-1, except the
        # last, which HF returns already passed through the final norm.
        torch.testing.assert_close(cache[f"{stack}.blocks.0.hook_resid_pre"], hidden[0], atol=ATOL, rtol=0)
        for i in range(n - 1):
            torch.testing.assert_close(cache[f"{stack}.blocks.{i}.hook_resid_post"], hidden[i + 1], atol=ATOL, rtol=0)
        normed_last = cache[f"{stack}.ln_final.hook_normalized"]
        torch.testing.assert_close(normed_last, hidden[n], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["encoder.hook_out"], ref.encoder_last_hidden_state, atol=ATOL, rtol=0)


def test_attention_patterns_match_hf(whisper_pair):
    hf, model, features = whisper_pair
    tokens = _tokens(hf)
    ref = _hf_forward(hf, features, tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            input_features=features, decoder_input_ids=tokens, names_filter=lambda n: n.endswith("hook_pattern")
        )
    for i, att in enumerate(ref.encoder_attentions):
        torch.testing.assert_close(cache[f"encoder.blocks.{i}.attn.hook_pattern"], att, atol=ATOL, rtol=0)
    for i, att in enumerate(ref.decoder_attentions):
        torch.testing.assert_close(cache[f"decoder.blocks.{i}.attn.hook_pattern"], att, atol=ATOL, rtol=0)
    for i, att in enumerate(ref.cross_attentions):
        pattern = cache[f"decoder.blocks.{i}.cross_attn.hook_pattern"]
        assert pattern.shape == (2, hf.config.decoder_attention_heads, tokens.shape[1], hf.config.max_source_positions)
        torch.testing.assert_close(pattern, att, atol=ATOL, rtol=0)


def test_greedy_tokens_equal_hf_generate(whisper_pair):
    hf, model, features = whisper_pair
    prompt = [hf.config.decoder_start_token_id, 50259, 50359]
    n_new = 12
    with torch.no_grad():
        ref = GenerationMixin.generate(
            hf,
            input_features=features,
            decoder_input_ids=torch.tensor([prompt] * 2),
            max_new_tokens=n_new,
            do_sample=False,
            num_beams=1,
            suppress_tokens=hf.config.suppress_tokens,
            begin_suppress_tokens=hf.config.begin_suppress_tokens,
            eos_token_id=hf.config.eos_token_id,
        )
    ours = model.generate(features, prompt, max_new_tokens=n_new)
    # HF pads a finished row with pad (= eos here); ours pads with eos too.
    assert ours.sequences.tolist() == ref.tolist()
    assert len(set(ours.tokens.flatten().tolist())) > 2, "degenerate random model: the test would prove little"


def test_cached_and_uncached_generation_agree(whisper_pair):
    _, model, features = whisper_pair
    prompt = [model.cfg.decoder_start_token_id]
    a = model.generate(features, prompt, max_new_tokens=10, use_cache=True)
    b = model.generate(features, prompt, max_new_tokens=10, use_cache=False)
    assert a.sequences.tolist() == b.sequences.tolist()
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=ATOL, rtol=0)


def test_logprobs_are_log_softmax_of_teacher_forced_logits(whisper_pair):
    _, model, features = whisper_pair
    prompt = [model.cfg.decoder_start_token_id]
    out = model.generate(features, prompt, max_new_tokens=5, suppress_tokens=[], begin_suppress_tokens=[])
    with torch.no_grad():
        logits = model(input_features=features, decoder_input_ids=out.sequences[:, :-1])
    lp = torch.log_softmax(logits[:, len(prompt) - 1 :], -1).gather(-1, out.tokens[..., None])[..., 0]
    torch.testing.assert_close(out.logprobs, lp, atol=ATOL, rtol=0)
