"""The explorer's data: what the page draws equals what the model computes (checked against
hooks we attach ourselves), the page is self-contained, and a 30-s clip's page stays under 5 MB."""

from __future__ import annotations

import base64
import io
import json
import re
import wave
from importlib import resources

import numpy as np
import pytest
import torch

from hooked_asr.explore.data import pool_columns, to_uint8


def _u8(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


def _captured(model, kwargs, names, run=None):
    """What the hooks ``names`` see during ``model(**kwargs)`` (or ``run(**kwargs)``)."""
    got = {}

    def grab(x, hook):
        got[hook.name] = x.detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, grab) for n in names]):
        (run or model)(**kwargs)
    return got


def test_pool_columns_keeps_attention_mass_and_quantize_round_trips():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(1500), size=(3, 2))  # rows of attention summing to 1
    pooled = pool_columns(x, 301)
    assert pooled.shape == (3, 2, 301)
    np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-12)
    # each bin is the sum of its frames
    edges = np.linspace(0, 1500, 302).round().astype(int)
    np.testing.assert_allclose(pooled[1, 0, 7], x[1, 0, edges[7] : edges[8]].sum())
    q = to_uint8(x[0, 0], 0.0, float(x[0, 0].max()))
    assert np.abs(q / 255 * x[0, 0].max() - x[0, 0]).max() <= 0.5 / 255 * x[0, 0].max() + 1e-12


@pytest.mark.slow
def test_thirty_second_view_is_under_five_megabytes_and_says_it_is_downsampled(thirty_second_view):
    v = thirty_second_view
    assert v.data["audio"]["duration"] == pytest.approx(30.0)
    assert len(v.data["transcript"]["tokens"]) > 60  # a real paragraph, not an empty transcript
    assert v.size_bytes < 5_000_000, f"{v.size_bytes / 1e6:.2f} MB"
    page = v.to_html()
    assert "drawn downsampled" in page
    assert v.data["audio_attention"]["columns"] < v.data["audio_attention"]["frames"] == 1500


@pytest.mark.slow
def test_page_is_self_contained_and_carries_the_data_and_audio(thirty_second_view, thirty_second_clip):
    v = thirty_second_view
    page = v.to_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must not fetch anything"
    static = resources.files("hooked_asr.explore").joinpath("static")
    assert static.joinpath("explorer.js").read_text() in page  # the packaged script, inlined
    data = json.loads(re.search(r'<script type="application/json" id="ha-data">(.*?)</script>', page, re.S)[1])
    assert data == json.loads(json.dumps(v.data))
    wav = re.search(r'<audio id="ha-audio"[^>]*src="data:audio/wav;base64,([^"]+)"', page)[1]
    with wave.open(io.BytesIO(base64.b64decode(wav))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767
    np.testing.assert_allclose(pcm, np.clip(thirty_second_clip, -1, 1), atol=1 / 32767)


@pytest.mark.slow
def test_whisper_cross_attention_drawn_is_the_models(thirty_second_view, whisper_tiny_en, thirty_second_clip):
    """Decoded page bins equal the sum-pooled ``cross_attn.hook_pattern`` of our own forward."""
    model, v = whisper_tiny_en, thirty_second_view
    A = v.data["audio_attention"]
    toks = [t["id"] for t in v.data["transcript"]["tokens"]]
    assert toks[:-1] == model.transcribe(thirty_second_clip).tokens and toks[-1] == model.cfg.eos_token_id
    tf = model.teacher_forced_inputs(thirty_second_clip, toks)
    layer, head, step = 2, 3, 17
    pat = _captured(model, tf.kwargs, [f"decoder.blocks.{layer}.cross_attn.hook_pattern"])
    row = pat[f"decoder.blocks.{layer}.cross_attn.hook_pattern"][0, head, tf.prompt_len - 1 + step].numpy()
    nl, nh, nc = A["n_layers"], A["n_heads"], A["columns"]
    frames = A["frames"]
    expect = pool_columns(row[:frames], nc)
    drawn = _u8(A["data"]).reshape(len(toks), nl, nh, nc)[step, layer, head] / 255 * A["row_max"][step][layer][head]
    np.testing.assert_allclose(drawn, expect, atol=0.5 / 255 * expect.max() + 1e-6)
    assert expect.max() == pytest.approx(A["row_max"][step][layer][head], abs=1e-5)
    # the "mean" row is the alignment heads' mean
    heads = [tuple(h) for h in model.cfg.alignment_heads]
    assert [tuple(h) for h in A["mean_heads"]] == heads
    # words: timed, in order, and together they hold every text token once
    words = v.data["transcript"]["words"]
    assert [i for w in words for i in w["tokens"]] == list(range(len(toks) - 1))
    assert all(0 <= w["start"] <= w["end"] <= 30.0 for w in words)  # openai-whisper's DTW can give a word 0 s
    assert [w["word"] for w in words] == [
        w.word.strip() for w in model.transcribe(thirty_second_clip, word_timestamps=True).words
    ]
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


@pytest.mark.slow
def test_logit_lens_and_self_attention_drawn_are_the_models(thirty_second_view, whisper_tiny_en, thirty_second_clip):
    model, v = whisper_tiny_en, thirty_second_view
    L, S = v.data["logit_lens"], v.data["self_attention"]
    toks = [t["id"] for t in v.data["transcript"]["tokens"]]
    tf = model.teacher_forced_inputs(thirty_second_clip, toks)
    n = model.cfg.decoder.n_layers
    names = [f"decoder.blocks.{l}.hook_resid_post" for l in range(n)] + ["decoder.blocks.1.attn.hook_pattern"]
    got = _captured(model, tf.kwargs, names)
    p = tf.prompt_len
    with torch.no_grad():
        for layer in (0, n - 1):
            lens = model.decoder.unembed(model.decoder.ln_final(got[f"decoder.blocks.{layer}.hook_resid_post"]))[0]
            top = lens[p - 1 : p - 1 + len(toks)].argmax(-1).tolist()
            assert [row[0] for row in L["topk_ids"][layer]] == top
    assert [row[0] for row in L["topk_ids"][-1]][:-1] == toks[:-1]  # greedy: the last layer's top-1 is the transcript
    shape = S["shape"]
    assert shape[:3] == [len(toks), n, model.cfg.decoder.n_heads] and S["per_head"]
    drawn = _u8(S["data"]).reshape(shape)[5, 1, 4] / 255
    pat = got["decoder.blocks.1.attn.hook_pattern"][0, 4, p - 1 + 5, S["key_positions"]].numpy()
    np.testing.assert_allclose(drawn, pat, atol=0.5 / 255 + 1e-6)


def test_qwen2_audio_view_uses_the_attention_to_the_audio_prefix():
    """No cross-attention: the audio columns are the ``<|AUDIO|>`` positions of the decoder's own attention."""
    from hooked_asr import HookedQwen2Audio
    from hooked_asr.explore import explore
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    audio = np.random.default_rng(0).normal(0, 0.1, 4800).astype(np.float32)
    v = explore(model, audio, max_new_tokens=6, progress=False)
    A = v.data["audio_attention"]
    assert A["kind"] == "audio_prefix" and v.data["model"]["arch"] == "qwen2_audio"
    assert v.data["transcript"]["words"] == []
    toks = [t["id"] for t in v.data["transcript"]["tokens"]]
    tf = model.teacher_forced_inputs(audio, toks)
    audio_pos = (tf.tokens[0] == model.audio_token_id).nonzero()[:, 0]
    assert A["frames"] == len(audio_pos) == A["columns"]  # 9 audio tokens: drawn one bin each
    got = _captured(model, tf.kwargs, ["decoder.blocks.2.attn.hook_pattern"])
    p, step, head = tf.prompt_len, 1, 5
    row = got["decoder.blocks.2.attn.hook_pattern"][0, head, p - 1 + step, audio_pos].numpy()
    drawn = _u8(A["data"]).reshape(len(toks), 3, 8, A["columns"])[step, 2, head] / 255 * A["row_max"][step][2][head]
    np.testing.assert_allclose(drawn, row, atol=0.5 / 255 * row.max() + 1e-6)
    # self-attention keys are the text positions only
    assert model.audio_token_id not in [int(tf.tokens[0, k]) for k in v.data["self_attention"]["key_positions"]]


@pytest.mark.slow
def test_patched_transcripts_are_the_transcripts_of_each_patch(panels_view, whisper_tiny_en):
    """Each kept transcript equals an independent decode with that head's ``hook_z`` zeroed."""
    view, audio, swept, texts = panels_view
    model = whisper_tiny_en
    assert set(texts) == set(swept.table["component"])
    changed = swept.table[swept.table["metric"] == "changed"].set_index("component")["value"]
    for comp in ["decoder.blocks.0.cross_attn.head.0", "decoder.blocks.3.cross_attn.head.2"]:
        layer, head = int(comp.split(".")[2]), int(comp.split(".")[-1])

        def zero(z, hook, head=head):
            z[:, :, head] = 0.0
            return z

        with model.hooks(fwd_hooks=[(f"decoder.blocks.{layer}.cross_attn.hook_z", zero)]):
            expect = model.transcribe(audio).text
        assert texts[comp] == expect
    clean = model.transcribe(audio).text
    assert all(bool(changed[c]) == (texts[c].strip() != clean.strip()) for c in texts)
    P = view.data["patching"]
    assert P["transcripts"] == texts and P["metric"] == "changed"
    cells = {c for m in P["maps"] for row in m["components"] for c in row}
    assert cells == set(texts)


@pytest.mark.slow
def test_sae_panel_traces_the_features_on_this_clip(panels_view, whisper_tiny_en):
    view, audio, _, _ = panels_view
    Z = view.data["sae"]
    assert [f["feature"] for f in Z["features"]] == [0, 1, 2]
    got = _captured(
        whisper_tiny_en,
        whisper_tiny_en.prepare_features(audio),
        ["encoder.blocks.2.hook_resid_post"],
        run=whisper_tiny_en.encode,
    )
    x = got["encoder.blocks.2.hook_resid_post"][0, : Z["trace_frames"]].numpy()
    for f in Z["features"]:
        expect = np.maximum(x[:, f["feature"]], 0)  # identity SAE: feature i < d_in is relu(x_i)
        drawn = _u8(f["trace"]) / 255 * f["trace_max"]
        np.testing.assert_allclose(drawn, expect, atol=0.5 / 255 * max(expect.max(), 1e-6) + 1e-5)
        assert sum(f["hist"]) > 0 and len(f["examples"]) >= 1


def test_a_clip_longer_than_the_models_window_is_refused_with_the_fix():
    from hooked_asr import HookedQwen2Audio
    from hooked_asr.audio import window_samples
    from hooked_asr.explore import explore
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("mha"), tokenizer=make_tokenizer())
    too_long = np.random.default_rng(0).normal(0, 0.1, window_samples(model) + 1600).astype(np.float32)
    with pytest.raises(ValueError, match=r"chunk_audio\(audio, 0.4\)"):
        explore(model, too_long, progress=False)


def test_the_script_and_style_ship_as_package_data():
    """An installed wheel carries the explorer's static files (setuptools package-data globs)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "hooked_asr.explore"
    ]
    static = root / "hooked_asr" / "explore" / "static"
    files = sorted(p.relative_to(static.parent).as_posix() for p in static.iterdir())
    assert files == ["static/explorer.css", "static/explorer.js", "static/live.css", "static/live.js"]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)
