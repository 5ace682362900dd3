"""HookedQwen2Audio equals Hugging Face's Qwen2-Audio (eager attention, fp32) on random weights.

Two tiny shapes: plain multi-head attention, and grouped-query attention (8 query heads on
2 key/value heads) with another rotary base and a deeper audio tower. The "mha" shape sets
``tie_word_embeddings``, which HF's Qwen2-Audio ignores (its lm_head stays its own tensor).
The tokenizer is a byte-level BPE built offline with Qwen2-Audio's special tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.utils import GenerationMixin

from hooked_asr import HookedQwen2Audio
from hooked_asr.audio import AudioError
from hooked_asr.components.projector import audio_token_counts
from hooked_asr.loading.qwen2_audio_weights import WeightConversionError, convert_tensor
from tests.conftest import QWEN2_AUDIO_SHAPES, SPECIAL_TOKENS, make_hf_qwen2_audio, make_tokenizer

ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a shared 2-core machine thread hand-offs cost more than the
    # maths (the module runs ~3x faster on one thread). Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=sorted(QWEN2_AUDIO_SHAPES))
def qwen_pair(request):
    """(hf_model, hooked_model, features [2, n_mels, frames], feature mask with row 1 padded)."""
    hf = make_hf_qwen2_audio(request.param)
    model = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())
    g = torch.Generator().manual_seed(1)
    n_frames = 2 * hf.config.audio_config.max_source_positions
    feats = torch.randn(2, hf.config.audio_config.num_mel_bins, n_frames, generator=g)
    mask = torch.ones(2, n_frames, dtype=torch.long)
    mask[1, n_frames - 11 :] = 0  # row 1 is shorter: its last frames are padding
    return hf, model, feats, mask


def _prompts(model, mask, extra=(7, 8, 9)):
    """Chat prompts for both rows, right-padded with text to one length (no attention mask needed)."""
    n_tok = audio_token_counts(mask)[1].tolist()
    rows = [model.transcription_prompt(n) + list(extra) for n in n_tok]
    width = max(map(len, rows))
    return torch.tensor([r + [10] * (width - len(r)) for r in rows])


def test_logits_hidden_states_and_audio_tower_match_hf(qwen_pair):
    hf, model, feats, mask = qwen_pair
    ids = _prompts(model, mask)
    seen = {}
    handles = [
        hf.model.audio_tower.register_forward_hook(lambda m, i, o: seen.__setitem__("tower", o.last_hidden_state)),
        hf.model.multi_modal_projector.register_forward_hook(lambda m, i, o: seen.__setitem__("proj", o)),
    ]
    try:
        with torch.no_grad():
            ref = hf(input_ids=ids, input_features=feats, feature_attention_mask=mask, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        logits, cache = model.run_with_cache(input_ids=ids, input_features=feats, feature_attention_mask=mask)
    torch.testing.assert_close(logits, ref.logits, atol=ATOL, rtol=0)
    # The audio tower (pooled + normed, with row 1's padded frames masked) and the projector.
    torch.testing.assert_close(cache["encoder.hook_out"], seen["tower"], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["projector.hook_out"], seen["proj"], atol=ATOL, rtol=0)
    # HF: hidden[0] is the merged embedding; hidden[i] the output of block i-1; the last is normed.
    n = model.n_layers["decoder"]
    hidden = ref.hidden_states
    assert len(hidden) == n + 1
    torch.testing.assert_close(cache["decoder.hook_embed"], hidden[0], atol=ATOL, rtol=0)
    for i in range(n - 1):
        torch.testing.assert_close(cache[f"decoder.blocks.{i}.hook_resid_post"], hidden[i + 1], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["decoder.ln_final.hook_normalized"], hidden[n], atol=ATOL, rtol=0)
    # The merged sequence holds exactly the real audio positions of each row, in order.
    n_tok = audio_token_counts(mask)[1].tolist()
    for row in range(2):
        where = (ids[row] == model.audio_token_id).nonzero()[:, 0]
        assert len(where) == n_tok[row]
        torch.testing.assert_close(
            cache["decoder.hook_embed"][row, where], cache["projector.hook_out"][row, : n_tok[row]]
        )


def test_audio_tower_hidden_states_match_hf(qwen_pair):
    hf, model, feats, mask = qwen_pair
    from transformers.masking_utils import create_bidirectional_mask

    conv, _ = audio_token_counts(mask)
    n_ctx = hf.config.audio_config.max_source_positions
    mask_2d = (torch.arange(n_ctx)[None] < conv[:, None]).long()
    attn = create_bidirectional_mask(
        config=hf.model.audio_tower.config, inputs_embeds=torch.zeros(2, n_ctx, 1), attention_mask=mask_2d
    )
    with torch.no_grad():
        ref = hf.model.audio_tower(feats, attention_mask=attn, output_hidden_states=True)
        _, cache = model.run_with_cache(
            input_features=feats, input_ids=_prompts(model, mask), feature_attention_mask=mask
        )
    n = model.n_layers["encoder"]
    torch.testing.assert_close(cache["encoder.blocks.0.hook_resid_pre"], ref.hidden_states[0], atol=ATOL, rtol=0)
    assert len(ref.hidden_states) == n + 1
    for i in range(n - 1):
        torch.testing.assert_close(
            cache[f"encoder.blocks.{i}.hook_resid_post"], ref.hidden_states[i + 1], atol=ATOL, rtol=0
        )
    # HF replaces the last block's output by the tower's final (pooled, normed) output.
    torch.testing.assert_close(cache["encoder.hook_out"], ref.hidden_states[n], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["encoder.hook_out"], ref.last_hidden_state, atol=ATOL, rtol=0)
    assert cache["encoder.hook_pooled"].shape == (2, n_ctx // 2, hf.config.audio_config.d_model)
    # finish_encoder (the encoder lens at the last layer) reproduces what the decoder reads.
    last = cache[f"encoder.blocks.{n - 1}.hook_resid_post"]
    torch.testing.assert_close(model.finish_encoder(last), cache["projector.hook_out"], atol=ATOL, rtol=0)


def test_greedy_tokens_equal_hf_generate(qwen_pair):
    hf, model, feats, mask = qwen_pair
    n_new = 12
    eos = SPECIAL_TOKENS.index("<|im_end|>")
    # Rows of one generate call share a prompt, hence a length: row 0 twice with different audio,
    # then row 1 (padded frames) alone.
    for f, m in [(torch.stack([feats[0], feats[1]]), mask[[0, 0]]), (feats[1:], mask[1:])]:
        prompt = model.transcription_prompt(int(audio_token_counts(m)[1][0]))
        ids = torch.tensor([prompt] * f.shape[0])
        with torch.no_grad():
            ref = GenerationMixin.generate(
                hf,
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                input_features=f,
                feature_attention_mask=m,
                max_new_tokens=n_new,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        ours = model.generate(
            f,
            prompt,
            max_new_tokens=n_new,
            eos_token_id=eos,
            feature_attention_mask=m,
            suppress_tokens=[],
            begin_suppress_tokens=[],
        )
        assert ours.sequences.tolist() == ref.tolist()
        assert len(set(ours.tokens.flatten().tolist())) > 2, "degenerate random model: the test would prove little"


def test_cached_and_uncached_generation_agree_and_logprobs_are_teacher_forced(qwen_pair):
    _, model, feats, mask = qwen_pair
    m = mask[[0, 0]]
    prompt = model.transcription_prompt(int(audio_token_counts(m)[1][0]))
    kw = dict(max_new_tokens=6, eos_token_id=-1, feature_attention_mask=m, suppress_tokens=[], begin_suppress_tokens=[])
    a = model.generate(feats, prompt, use_cache=True, **kw)
    b = model.generate(feats, prompt, use_cache=False, **kw)
    assert a.sequences.tolist() == b.sequences.tolist()
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=ATOL, rtol=0)
    with torch.no_grad():
        logits = model(input_ids=a.sequences[:, :-1], input_features=feats, feature_attention_mask=m)
    lp = torch.log_softmax(logits[:, len(prompt) - 1 :], -1).gather(-1, a.tokens[..., None])[..., 0]
    torch.testing.assert_close(a.logprobs, lp, atol=ATOL, rtol=0)


def test_hooks_live_during_generation_change_the_transcript(qwen_pair):
    _, model, feats, mask = qwen_pair
    prompt = model.transcription_prompt(int(audio_token_counts(mask[:1])[1][0]))
    kw = dict(max_new_tokens=5, eos_token_id=-1, feature_attention_mask=mask[:1])
    base = model.generate(feats[:1], prompt, **kw)
    calls = []

    def zero_audio(x, hook):
        calls.append(x.shape)
        return torch.zeros_like(x)

    with model.hooks(fwd_hooks=[("projector.hook_out", zero_audio)]):
        ablated = model.generate(feats[:1], prompt, **kw)
    # The audio enters once (the prompt step); with no audio the continuation changes.
    assert len(calls) == 1
    assert ablated.tokens.tolist() != base.tokens.tolist()
    with torch.no_grad():
        silent = model.decode(
            torch.tensor([prompt]),
            torch.zeros(1, feats.shape[-1] // 4, model.cfg.decoder.d_model),
            audio_token_counts(mask[:1])[1],
        )[0]
    assert int(silent[0, -1].argmax()) == ablated.tokens[0, 0]


def test_transcribe_equals_generate_on_prepared_audio(qwen_pair):
    hf, model, _, _ = qwen_pair
    window = 2 * hf.config.audio_config.max_source_positions * 160
    rng = np.random.default_rng(0)
    clips = [
        0.15 * rng.standard_normal(window - 1000).astype(np.float32),
        0.15 * rng.standard_normal(window // 2).astype(np.float32),
    ]
    results = model.transcribe(clips, max_new_tokens=8)
    feats = model.prepare_features(clips)
    n_tok = audio_token_counts(feats["feature_attention_mask"])[1].tolist()
    assert n_tok[0] != n_tok[1]
    stops = model.stop_token_ids()
    for i, res in enumerate(results):
        prompt = model.transcription_prompt(n_tok[i])
        out = model.generate(
            feats["input_features"][i : i + 1],
            prompt,
            max_new_tokens=8,
            eos_token_id=stops[0],
            feature_attention_mask=feats["feature_attention_mask"][i : i + 1],
            suppress_tokens=[model.audio_token_id],
            begin_suppress_tokens=[model.audio_token_id],
        )
        toks = out.tokens[0].tolist()
        cut = next((j for j, t in enumerate(toks) if t in stops), len(toks))
        assert res.tokens == toks[:cut]
        assert res.prompt == prompt and res.extra["n_audio_tokens"] == n_tok[i]
        assert res.text == model.tokenizer.decode(res.tokens).strip()


@pytest.fixture(scope="module")
def window_pair():
    """A tiny model with the real 30 s window (3000 mel frames, 750 audio tokens) and its HF twin."""
    hf = make_hf_qwen2_audio("gqa", n_ctx=1500)
    return hf, HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer())


def _hf_processor(n_mels: int):
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor

    tok = PreTrainedTokenizerFast(tokenizer_object=make_tokenizer())
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tok)


def test_prompt_features_and_mask_equal_hf_processor(window_pair):
    hf, model = window_pair
    proc = _hf_processor(hf.config.audio_config.num_mel_bins)
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio_url": "-"},
                {"type": "text", "text": "Transcribe the speech into text."},
            ],
        }
    ]
    text = proc.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    rng = np.random.default_rng(0)
    for n_samples, n_tok in [(16000, 25), (16000 * 7 + 77, 175)]:  # 1 s: 100 frames -> 50 -> 25 tokens
        clip = 0.1 * rng.standard_normal(n_samples).astype(np.float32)
        ref = proc(text=text, audio=[clip], sampling_rate=16000, return_tensors="pt")
        ours = model.prepare_features(clip)
        torch.testing.assert_close(ours["input_features"], ref["input_features"], atol=1e-4, rtol=0)
        assert torch.equal(ours["feature_attention_mask"], ref["feature_attention_mask"].long())
        assert audio_token_counts(ours["feature_attention_mask"])[1].tolist() == [n_tok]
        assert model.transcription_prompt(n_tok) == ref["input_ids"][0].tolist()
    assert audio_token_counts(torch.ones(1, 3000))[1].tolist() == [750]
    # End to end: our transcript is HF's greedy continuation of the processor's inputs.
    with torch.no_grad():
        gen = GenerationMixin.generate(
            hf,
            **ref,
            max_new_tokens=6,
            do_sample=False,
            num_beams=1,
            eos_token_id=model.cfg.eos_token_id,
            pad_token_id=model.cfg.eos_token_id,
            suppress_tokens=[model.audio_token_id],
        )
    res = model.transcribe(clip, max_new_tokens=6)
    hf_new = gen[0, ref["input_ids"].shape[1] :].tolist()
    assert res.tokens == hf_new[: len(res.tokens)] and len(hf_new) == len(res.tokens) + res.finished
    with pytest.raises(AudioError, match=r"lasts 31.0 s; Qwen2-Audio's audio tower reads at most 30 s"):
        model.prepare_features(np.full(16000 * 31, 0.1, dtype=np.float32))


def test_end_token_follows_the_prompt_format(window_pair):
    hf, model = window_pair
    tok = model.tokenizer
    assert model.cfg.eos_token_id == tok.token_to_id("<|im_end|>")
    base = HookedQwen2Audio.from_hf(hf, tokenizer=make_tokenizer(), chat=False)
    assert base.cfg.eos_token_id == tok.token_to_id("<|endoftext|>")
    expected = "<|audio_bos|>" + "<|AUDIO|>" * 2 + "<|audio_eos|>Detect the language and recognize the speech: <|en|>"
    assert tok.decode(base.transcription_prompt(2), skip_special_tokens=False) == expected


def test_bad_prompts_raise_clear_errors(qwen_pair):
    _, model, feats, mask = qwen_pair
    n = int(audio_token_counts(mask[:1])[1][0])
    with pytest.raises(ValueError, match=r"no audio placeholder <\|AUDIO\|> \(id 3\)"):
        model(input_ids=torch.tensor([[7, 8, 9]]), input_features=feats[:1])
    # Two audios, one prompt with room for one of them.
    with pytest.raises(ValueError, match="more audio than prompts"):
        model(input_ids=torch.tensor([[7] + [3] * n]), input_features=feats[[0, 0]])
    # One unexpanded placeholder (the processor would have repeated it n times).
    with pytest.raises(ValueError, match=rf"more audio than placeholders: the audio gives \[{n}\] embeddings"):
        model(input_ids=torch.tensor([[7, 3, 8]]), input_features=feats[:1])
    with pytest.raises(ValueError, match="more placeholders than audio"):
        model(input_ids=torch.tensor([[7] + [3] * (n + 2)]), input_features=feats[:1])
    with pytest.raises(ValueError, match="hold audio placeholders <\\|AUDIO\\|> but no audio was given"):
        model(input_ids=torch.tensor([[7, 3, 8]]))
    with pytest.raises(ValueError, match=r"input_features must have shape \[batch, \d+, \d+\]"):
        model(input_ids=torch.tensor([[3]]), input_features=feats[:1, :, :-2])
    window_s = feats.shape[-1] * 160 / 16000
    # One forward reads one window; transcribe() walks longer audio window by window (decoding/test_longform.py).
    with pytest.raises(AudioError, match=rf"reads at most {window_s:g} s"):
        model.prepare_features(np.full(int(16000 * (window_s + 1)), 0.1, dtype=np.float32))
    with pytest.raises(ValueError, match="no tokenizer"):
        HookedQwen2Audio(model.cfg).transcription_prompt(4)


def test_convert_tensor_rejects_foreign_keys():
    hf = make_hf_qwen2_audio("gqa")
    cfg = HookedQwen2Audio.from_hf(hf).cfg
    with pytest.raises(WeightConversionError, match="unexpected key 'model.vision_tower.w'"):
        convert_tensor("model.vision_tower.w", torch.zeros(1), cfg)
    with pytest.raises(
        WeightConversionError, match="unexpected key 'model.language_model.layers.3.mlp.up_proj.weight'"
    ):
        convert_tensor("model.language_model.layers.3.mlp.up_proj.weight", torch.zeros(80, 64), cfg)
    # The older hub layout converts to the same names.
    w = torch.randn(64 * 2 // 8 * 1, 64)
    a = convert_tensor("language_model.model.layers.0.self_attn.k_proj.weight", w, cfg)
    b = convert_tensor("model.language_model.layers.0.self_attn.k_proj.weight", w, cfg)
    assert a[0] == b[0] == "decoder.blocks.0.attn.W_K" and torch.equal(a[1], b[1]) and a[1].shape == (2, 64, 8)


@pytest.mark.parametrize("shape", sorted(QWEN2_AUDIO_SHAPES))
def test_save_pretrained_round_trip_shard_by_shard(tmp_path, shape, monkeypatch):
    import safetensors

    hf = make_hf_qwen2_audio(shape)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    make_tokenizer().save(str(tmp_path / "tokenizer.json"))
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert len(shards) > 2
    opened = []
    real_open = safetensors.safe_open

    def counting_open(path, *a, **k):
        opened.append(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(safetensors, "safe_open", counting_open)
    model = HookedQwen2Audio.from_pretrained(tmp_path, dtype=torch.float32)
    assert sorted(opened) == [str(s) for s in shards]  # each shard opened once, in turn
    assert model.tokenizer is not None and model.tokenizer.token_to_id("<|AUDIO|>") == model.audio_token_id

    g = torch.Generator().manual_seed(2)
    feats = torch.randn(
        1, hf.config.audio_config.num_mel_bins, 2 * hf.config.audio_config.max_source_positions, generator=g
    )
    ids = torch.tensor([model.transcription_prompt(feats.shape[-1] // 4)])
    with torch.no_grad():
        ref = hf(
            input_ids=ids, input_features=feats, feature_attention_mask=torch.ones(1, feats.shape[-1], dtype=torch.long)
        ).logits
        torch.testing.assert_close(model(input_ids=ids, input_features=feats), ref, atol=ATOL, rtol=0)
        half = HookedQwen2Audio.from_pretrained(tmp_path, dtype="bfloat16")
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
        assert half.decoder.blocks[0].attn.rotary.inv_freq.dtype == torch.float32
        lp_half = torch.log_softmax(half(input_ids=ids, input_features=feats).float(), -1)
    # bf16 keeps ~3 significant digits: the distributions agree to within bf16 rounding.
    assert (lp_half.exp() - torch.softmax(ref, -1)).abs().max() < 0.05
