"""The activation store, probes and monitors on Qwen2-Audio (the model-agnostic methods on the
second model family), with a tiny random model whose audio window is 32 mel frames (0.32 s).

Qwen2-Audio pads every clip to its window and marks the real mel frames in a mask; the tower's
blocks see ``c = (n_mel - 1) // 2 + 1`` real frames of ``n_ctx`` (16 here). Decoder hooks are
read from a teacher-forced pass over ``chat prompt + transcript + <|im_end|>``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hooked_asr import HookedQwen2Audio
from hooked_asr.activations import extract_activations
from hooked_asr.components.projector import audio_token_counts
from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
from hooked_asr.probing import fit_probe, probe_layers
from tests.conftest import make_hf_qwen2_audio, make_tokenizer

ENC = ["encoder.blocks.0.hook_resid_post", "encoder.blocks.2.hook_resid_post"]
DEC = "decoder.blocks.2.hook_resid_post"
MAX_NEW = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())


def window_samples(model) -> int:
    return model.cfg.encoder.n_frames * 160  # 32 mel frames of 10 ms


def tones(model, n: int, seed: int = 0) -> list[dict]:
    """Clips of varied lengths (a fifth to all of the window): a low or a high tone plus noise;
    ``tone`` is the planted label."""
    rng = np.random.default_rng(seed)
    w = window_samples(model)
    out = []
    for i in range(n):
        tone = i % 2
        length = int(rng.integers(w // 5, w + 1))
        t = np.arange(length) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (3000 if tone else 400) * t) + 0.05 * rng.standard_normal(length)
        out.append({"audio": audio.astype(np.float32), "tone": tone, "id": f"c{i}"})
    return out


@pytest.fixture(scope="module")
def mixed_store(model, tmp_path_factory):
    """Encoder (mean) and decoder (final) hooks of a few clips, batched 4 at a time."""
    data = tones(model, 5, seed=1)
    store = extract_activations(
        model,
        data,
        ENC + [DEC],
        tmp_path_factory.mktemp("mixed"),
        shard_size=8,
        batch_size=4,
        max_new_tokens=MAX_NEW,
        progress=False,
    )
    return data, store


@pytest.fixture(scope="module")
def tone_store(model, tmp_path_factory):
    data = tones(model, 32, seed=0)
    store = extract_activations(
        model, data, ENC, tmp_path_factory.mktemp("tones"), shard_size=16, batch_size=8, progress=False
    )
    return data, store


def test_encoder_mean_averages_exactly_the_clips_audio_frames(model, mixed_store):
    data, store = mixed_store
    n_ctx = model.cfg.encoder.n_ctx
    seen = set()
    for h in ENC:
        rows = store.load(h)
        assert rows.shape == (len(data), model.cfg.encoder.d_model) and store.pooling(h) == "mean"
        for i, it in enumerate(data):
            n = len(it["audio"])
            tf = model.teacher_forced_inputs(it["audio"])
            with torch.no_grad():
                _, cache = model.run_with_cache(**tf.kwargs, names_filter=[h])
            x = cache[h][0]
            assert x.shape[0] == n_ctx
            # Real frames, counted without the library's helper: mel frames hold ceil(n / 160)
            # samples' worth; the stride-2 conv keeps (n_mel - 1) // 2 + 1 of them ...
            n_mel = math.ceil(n / 160)
            frames = (n_mel - 1) // 2 + 1
            assert int(tf.kwargs["feature_attention_mask"].sum()) == n_mel
            assert frames == int(audio_token_counts(tf.kwargs["feature_attention_mask"])[0])
            # ... which are the frames of x that overlap the clip (x spans the window).
            assert frames == math.ceil(n * x.shape[0] / window_samples(model))
            torch.testing.assert_close(rows[i], x[:frames].double().mean(0).float(), atol=1e-6, rtol=1e-6)
            if frames < n_ctx:  # the padding would have changed the row
                seen.add(frames)
                assert not torch.allclose(rows[i], x.mean(0), atol=1e-3)
    assert len(seen) >= 2, "the clips should cover several lengths shorter than the window"


def test_decoder_final_is_the_end_of_reply_position_of_a_teacher_forced_pass(model, mixed_store):
    data, store = mixed_store
    tok = model.tokenizer
    im_end = tok.token_to_id("<|im_end|>")
    # The chat reply ends with <|im_end|>: generation stops at it, and extraction appends it to
    # every transcript (finished or cut at max_new_tokens), so each row reads the same token.
    # The text also stops at <|endoftext|> (this random model ends clip 1 with it); the row
    # still reads <|im_end|> there, as it would for an unfinished transcript.
    assert model.cfg.eos_token_id == im_end == model.stop_token_ids()[0]
    rows, items = store.load(DEC), store.items()
    assert rows.shape == (len(data), model.cfg.decoder.d_model) and store.pooling(DEC) == "final"
    for i, it in enumerate(data):
        res = model.transcribe(it["audio"], max_new_tokens=MAX_NEW)
        assert items[i]["tokens"] == res.tokens and items[i]["transcript"] == res.text
        feats = model.prepare_features(it["audio"])
        n_tok = int(audio_token_counts(feats["feature_attention_mask"])[1][0])
        ids = torch.tensor([model.transcription_prompt(n_tok) + res.tokens + [im_end]])
        with torch.no_grad():
            _, cache = model.run_with_cache(input_ids=ids, **feats, names_filter=[DEC])
        torch.testing.assert_close(rows[i], cache[DEC][0, -1], atol=1e-5, rtol=1e-5)
    # The rows are per clip: clips of different lengths (different prompts) give different rows.
    assert len({len(it["audio"]) // 160 for it in data}) > 1
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 1e-4


def test_monitors_score_as_the_probe_on_the_stored_rows(model, mixed_store, tone_store):
    data, store = mixed_store
    tdata, tstore = tone_store
    enc = ENC[1]
    enc_probe = fit_probe(tstore.load(enc), tstore.labels("tone"), l2=10.0).probe  # scores well inside (0, 1)
    g = torch.Generator().manual_seed(0)
    dec_probe = fit_probe(torch.randn(20, model.cfg.decoder.d_model, generator=g), [0, 1] * 10).probe
    mons = [ProbeMonitor("tone", enc_probe, enc), ProbeMonitor("dec", dec_probe, DEC)]
    clips = [it["audio"] for it in data[:3]]
    plain = model.transcribe(clips, max_new_tokens=MAX_NEW)
    out = transcribe_with_monitors(model, clips, mons, max_new_tokens=MAX_NEW)
    assert [r.tokens for r in out] == [r.tokens for r in plain] and [r.text for r in out] == [r.text for r in plain]
    enc_rows, dec_rows = store.load(enc), store.load(DEC)
    for i, r in enumerate(out):
        want = float(enc_probe.predict_proba(enc_rows[i : i + 1])[0, 1])
        assert r.extra["monitors"]["tone"] == pytest.approx(want, abs=1e-5)
        want = float(dec_probe.predict_proba(dec_rows[i : i + 1])[0, 1])
        assert r.extra["monitors"]["dec"] == pytest.approx(want, abs=1e-5)
        assert r.extra["monitor_labels"]["tone"] == enc_probe.classes[int(enc_probe.predict_index(enc_rows[i : i + 1]))]
    # A clip the probe never saw: the monitor reads the same row the store would.
    one = transcribe_with_monitors(model, tdata[0]["audio"], mons[0], max_new_tokens=MAX_NEW)
    want = float(enc_probe.predict_proba(tstore.load(enc)[:1])[0, 1])
    assert one.extra["monitors"]["tone"] == pytest.approx(want, abs=1e-5)


def test_probe_layers_on_a_qwen2_audio_store_equals_fit_probe(tone_store):
    data, store = tone_store
    assert store.labels("tone").tolist() == [it["tone"] for it in data]
    sweep = probe_layers(store, label_key="tone")
    assert [r["hook"] for r in sweep.rows] == ENC
    assert [r["stack"] for r in sweep.rows] == ["encoder", "encoder"] and [r["layer"] for r in sweep.rows] == [0, 2]
    for row in sweep.rows:
        ref = fit_probe(store.load(row["hook"]), store.labels("tone"))
        got = sweep.results[row["hook"]]
        assert (got.test_idx == ref.test_idx).all() and (got.train_idx == ref.train_idx).all()
        assert {k: row[k] for k in ref.metrics() if k in row} == {k: v for k, v in ref.metrics().items() if k in row}
        torch.testing.assert_close(got.probe.linear.weight, ref.probe.linear.weight)
    # The planted tone is linearly readable from the mean-pooled tower.
    assert max(r["test_acc"] for r in sweep.rows) >= 0.8
