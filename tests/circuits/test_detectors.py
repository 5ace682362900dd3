"""Head detectors: every score equals the attention mass computed by hand from the cached patterns
(real tiny.en on espeak speech built word by word, so word timings are exact); the alignment
detector's top heads overlap OpenAI's published alignment heads (model.cfg.alignment_heads) far
above chance; Qwen2-Audio's masked audio tower puts no attention on padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.circuits.detectors import detect_heads, save_head_scores, top_heads, word_by_word
from hooked_asr.patching import frames_between

KINDS = ["alignment", "previous_token", "duplicate_token", "padding", "first_frame", "silence", "reference"]


@pytest.fixture(scope="module")
def item():
    audio, words = word_by_word("the cat and the dog sat on the mat".split())
    return {"audio": audio, "words": words}


@pytest.fixture(scope="module")
def scored(whisper_tiny_en, item):
    ones = lambda info: torch.ones(info.n_query, info.n_key)  # noqa: E731
    return detect_heads(whisper_tiny_en, [item], KINDS, reference=ones, attention="decoder.cross_attn", progress=False)


@pytest.fixture(scope="module")
def patterns(whisper_tiny_en, item):
    m = whisper_tiny_en
    toks = [t for i, (w, _, _) in enumerate(item["words"]) for t in m.tokenizer.encode(" " + w)]
    tf = m.teacher_forced_inputs(item["audio"], toks)
    with torch.no_grad():
        _, cache = m.run_with_cache(**tf.kwargs, names_filter=lambda n: n.endswith("hook_pattern"))
    return tf, cache, toks


def test_scores_equal_attention_mass_by_hand(whisper_tiny_en, item, scored, patterns):
    m = whisper_tiny_en
    tf, cache, toks = patterns
    cross = torch.stack([cache[f"decoder.blocks.{l}.cross_attn.hook_pattern"][0] for l in range(4)])  # [l, h, q, f]
    selfp = torch.stack([cache[f"decoder.blocks.{l}.attn.hook_pattern"][0] for l in range(4)])
    # previous token: mean over q >= 1 of pattern[q, q - 1]
    q = torch.arange(1, selfp.shape[-2])
    assert torch.allclose(scored["previous_token"], selfp[..., q, q - 1].mean(-1), atol=1e-5)
    # padding: cross-attention mass on frames after the audio's end (every row)
    n_audio = len(item["audio"]) / 16000
    pad = [f for f in range(cross.shape[-1]) if f * 0.02 >= n_audio]
    assert torch.allclose(scored["padding"]["decoder.cross_attn"], cross[..., pad].sum(-1).mean(-1), atol=1e-5)
    assert torch.allclose(scored["first_frame"]["decoder.cross_attn"], cross[..., 0].mean(-1), atol=1e-5)
    # alignment: row writing token i -> mass inside its word's frames
    owner = [i for i, (w, _, _) in enumerate(item["words"]) for _ in m.tokenizer.encode(" " + w)]
    masses = []
    for i, wi in enumerate(owner):
        _, s, e = item["words"][wi]
        frames = [f for f in range(cross.shape[-1]) if (f + 1) * 0.02 > s and f * 0.02 < e]
        masses.append(cross[:, :, tf.prompt_len - 1 + i, frames].sum(-1))
    assert torch.allclose(scored["alignment"], torch.stack(masses, -1).mean(-1), atol=1e-5)
    # duplicate token: "the" appears three times; rows with an earlier copy only
    full = tf.tokens[0]
    rows = [(qq, [k for k in range(qq) if full[k] == full[qq]]) for qq in range(len(full))]
    dup = torch.stack([selfp[:, :, qq, ks].sum(-1) for qq, ks in rows if ks], -1).mean(-1)
    assert torch.allclose(scored["duplicate_token"], dup, atol=1e-5)
    # a user reference of all ones: every pattern row sums to one
    assert torch.allclose(scored["reference"], torch.ones(4, 6), atol=1e-5)
    assert frames_between(item["words"][0][1], item["words"][0][2])[0] == int(item["words"][0][1] / 0.02)


def test_alignment_heads_found_above_chance(whisper_tiny_en, scored, tmp_path):
    m = whisper_tiny_en
    published = {tuple(h) for h in m.cfg.alignment_heads}
    assert len(published) == 8  # OpenAI's heads, from the checkpoint's config
    top = top_heads(scored["alignment"], len(published))
    chance = len(published) ** 2 / (4 * 6)  # expected overlap of a random top-8 (2.7)
    assert len(published & set(top)) >= 4 > chance, (top, published)
    paths = save_head_scores(scored["padding"], tmp_path / "pad", "padding", marked=m.cfg.alignment_heads)
    assert (
        paths["decoder.cross_attn"].stat().st_size > 1000 and paths["csv"].read_text().count("\n") == 1 + 4 * 6 + 4 * 6
    )


def test_qwen_padding_is_masked_and_previous_token_by_hand(qwen_gqa):
    audio = (0.1 * np.random.default_rng(0).standard_normal(3000)).astype(np.float32)  # 0.19 s of a 0.32 s window
    item = {"audio": audio, "text": "You are a helpful assistant"}
    res = detect_heads(qwen_gqa, [item], ["padding", "previous_token"], progress=False)
    assert res["padding"].abs().max() < 1e-6  # the tower masks padded frames (the decoder never sees them)
    tf = qwen_gqa.teacher_forced_inputs(audio, qwen_gqa.tokenizer.encode("You are a helpful assistant"))
    with torch.no_grad():
        _, cache = qwen_gqa.run_with_cache(**tf.kwargs, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    p = torch.stack([cache[f"decoder.blocks.{l}.attn.hook_pattern"][0] for l in range(3)])
    q = torch.arange(1, p.shape[-2])
    assert torch.allclose(res["previous_token"], p[..., q, q - 1].mean(-1), atol=1e-5)


def test_errors(whisper_tiny_en, item):
    with pytest.raises(ValueError, match="unknown detector"):
        detect_heads(whisper_tiny_en, [item], "induction_head")
    with pytest.raises(ValueError, match="needs reference"):
        detect_heads(whisper_tiny_en, [item], "reference")


def test_qwen_alignment_scores_decoder_attention_to_audio_tokens_by_hand(qwen_gqa):
    """Qwen2-Audio has no cross-attention: the alignment detector scores the decoder's self-attention
    onto the audio-token positions, audio token j spanning [j, j + 1) * pool_stride * 20 ms."""
    m = qwen_gqa
    audio = (0.1 * np.random.default_rng(1).standard_normal(5000)).astype(np.float32)  # 0.31 s
    words = [("You", 0.0, 0.1), ("are", 0.12, 0.31)]
    res = detect_heads(m, [{"audio": audio, "words": words}], "alignment", progress=False)
    owner = [i for i, (w, _, _) in enumerate(words) for _ in m.tokenizer.encode(w if i == 0 else " " + w)]
    toks = [t for i, (w, _, _) in enumerate(words) for t in m.tokenizer.encode(w if i == 0 else " " + w)]
    tf = m.teacher_forced_inputs(audio, toks)
    with torch.no_grad():
        _, cache = m.run_with_cache(**tf.kwargs, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    audio_pos = (tf.tokens[0] == m.audio_token_id).nonzero()[:, 0].tolist()
    step = 2 * 160 / 16000 * m.cfg.encoder.pool_stride
    masses = []
    for i, wi in enumerate(owner):
        _, s, e = words[wi]
        keys = [p for j, p in enumerate(audio_pos) if (j + 1) * step > s and j * step < e]
        p = torch.stack([cache[f"decoder.blocks.{l}.attn.hook_pattern"][0] for l in range(3)])
        masses.append(p[:, :, tf.prompt_len - 1 + i, keys].sum(-1))
    assert res.shape == (3, 8) and torch.allclose(res, torch.stack(masses, -1).mean(-1), atol=1e-5)
