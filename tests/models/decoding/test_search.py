"""The search's fast paths change no answer and hide nothing from a hook: with nothing hooked a
beam group's prompt runs once per audio and only the read positions get logits; with a hook
the model runs every beam and every position, and the tokens are the same either way."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("algorithm", ["openai", "huggingface"])
def test_beam_search_with_and_without_hooks_gives_the_same_tokens_and_hooks_see_every_beam(
    tiny_hooked_whisper, algorithm
):
    model = tiny_hooked_whisper
    torch.manual_seed(0)
    feats = torch.randn(2, model.cfg.encoder.n_mels, 2 * model.cfg.encoder.n_ctx)
    prompt = [model.cfg.decoder_start_token_id, 5, 6, 7]
    kw = dict(num_beams=3, max_new_tokens=6, beam_algorithm=algorithm)
    plain = model.generate(feats, prompt, **kw)
    seen: dict[str, list[tuple[int, ...]]] = {"logits": [], "resid": []}
    hooks = [
        ("decoder.hook_logits", lambda t, hook: seen["logits"].append(tuple(t.shape))),
        ("decoder.blocks.0.hook_resid_post", lambda t, hook: seen["resid"].append(tuple(t.shape))),
    ]
    with model.hooks(fwd_hooks=hooks):
        hooked = model.generate(feats, prompt, **kw)
    assert torch.equal(plain.sequences, hooked.sequences)
    torch.testing.assert_close(plain.logprobs, hooked.logprobs, atol=1e-5, rtol=0)
    # the first step: every beam of both audio, every prompt position
    assert seen["logits"][0] == (6, len(prompt), model.cfg.decoder.d_vocab)
    assert seen["resid"][0] == (6, len(prompt), model.cfg.decoder.d_model)
    assert all(s[:2] == (6, 1) for s in seen["logits"][1:])


def test_no_speech_probability_is_read_at_the_start_of_transcript(whisper_tiny_en):
    # The prompt's no-speech position is one of the few whose logits are computed: its value
    # equals the softmax of a full teacher-forced forward at that position, with beams or not.
    model = whisper_tiny_en
    feats = model.prepare_features(0.05 * torch.randn(16000 * 3).numpy())["input_features"]
    prompt = model._window_prompt(None, "transcribe", True, model.tokenizer.encode(" Hello there."))
    pos, token = model._no_speech_query(prompt)
    assert pos > 0
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([prompt]))
    expected = logits[0, pos].float().softmax(-1)[token]
    for beams in (1, 3):
        out = model.generate(feats, prompt, num_beams=beams, max_new_tokens=2, beam_algorithm="openai")
        torch.testing.assert_close(out.no_speech_probs[0], expected, atol=1e-6, rtol=1e-4)
