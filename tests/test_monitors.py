"""Probe monitors: scores equal the probe applied to run_with_cache activations pooled the same
way, equal the probe applied to an extracted store, leave transcripts unchanged, and batch like
single clips; bad monitors raise clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_asr.activations import extract_activations
from hooked_asr.audio import audio_frames
from hooked_asr.monitors import ProbeMonitor, transcribe_with_monitors
from hooked_asr.probing import LinearProbe, fit_probe

ENC = "encoder.blocks.1.hook_resid_post"
DEC = "decoder.blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def setup():
    from tests.activations._workers import clips, small_whisper

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model = small_whisper()
    data = clips(6, seed=1)
    g = torch.Generator().manual_seed(0)
    # probes with generic (not trained) weights, so every score is a non-trivial number
    probes = {}
    for name, classes in [("bin", [0, 1]), ("multi", [0, 1, 2])]:
        p = LinearProbe(32, "classification", classes, dtype=torch.float64)
        with torch.no_grad():
            p.linear.weight.normal_(0, 0.3, generator=g)
            p.linear.bias.normal_(0, 0.3, generator=g)
            p.mean.normal_(0, 0.5, generator=g)
            p.std.uniform_(0.5, 2.0, generator=g)
        probes[name] = p
    reg = LinearProbe(32, "regression", dtype=torch.float64)
    with torch.no_grad():
        reg.linear.weight.normal_(0, 0.3, generator=g)
        reg.y_mean.fill_(2.0)
        reg.y_std.fill_(3.0)
    probes["reg"] = reg
    yield model, data, probes
    torch.set_num_threads(n)


def monitors(probes):
    return [
        ProbeMonitor("speech", probes["bin"], ENC),
        ProbeMonitor("risk", probes["bin"], DEC),
        ProbeMonitor("risk_mean", probes["multi"], DEC, pooling="mean", positive=2),
        ProbeMonitor("level", probes["reg"], "encoder.blocks.0.hook_mlp_out"),
    ]


def test_scores_equal_probe_on_run_with_cache(setup):
    model, data, probes = setup
    mons = monitors(probes)
    audio = [d["audio"] for d in data]
    results = transcribe_with_monitors(model, audio, mons, max_new_tokens=5)
    plain = model.transcribe(audio, max_new_tokens=5)
    for clip, res, ref in zip(audio, results, plain):
        assert res.tokens == ref.tokens and res.token_logprobs == ref.token_logprobs  # hooks only read
        tf = model.teacher_forced_inputs(clip, continuation=list(res.tokens) + [model.cfg.eos_token_id])
        _, cache = model.run_with_cache(**tf.kwargs, names_filter=[ENC, DEC, "encoder.blocks.0.hook_mlp_out"])
        n = audio_frames(len(clip), cache[ENC].shape[1])
        enc_vec = cache[ENC][0, :n].double().mean(0)
        expected = {
            "speech": float(probes["bin"].predict_proba(enc_vec)[0, 1]),
            "risk": float(probes["bin"].predict_proba(cache[DEC][0, -1])[0, 1]),
            "risk_mean": float(probes["multi"].predict_proba(cache[DEC][0].double().mean(0))[0, 2]),
            "level": float(probes["reg"].predict(cache["encoder.blocks.0.hook_mlp_out"][0, :n].double().mean(0))[0]),
        }
        assert set(res.extra["monitors"]) == set(expected)
        for k, v in expected.items():
            assert res.extra["monitors"][k] == pytest.approx(v, abs=1e-5), k
        assert 0 < res.extra["monitors"]["speech"] < 1
        assert res.extra["monitor_labels"]["speech"] == int(res.extra["monitors"]["speech"] > 0.5)
        assert res.extra["monitor_labels"]["level"] == res.extra["monitors"]["level"]
    # a single clip gives the same scores as inside a batch (padding never leaks in)
    one = transcribe_with_monitors(model, audio[2], mons, max_new_tokens=5)
    for k, v in results[2].extra["monitors"].items():
        assert one.extra["monitors"][k] == pytest.approx(v, abs=1e-6)


def test_scores_equal_probe_on_extracted_store(setup, tmp_path):
    """A probe trained on a store built by extract_activations scores the same rows live."""
    model, data, _ = setup
    store = extract_activations(
        model,
        data,
        [ENC, DEC],
        tmp_path,
        shard_size=6,
        batch_size=3,
        max_new_tokens=5,
        progress=False,
        dataset_id="mon",
    )
    y = store.labels("label")
    mons = [ProbeMonitor(h, fit_probe(store.load(h), y, test_size=0).probe, h) for h in (ENC, DEC)]
    results = transcribe_with_monitors(model, [d["audio"] for d in data], mons, max_new_tokens=5)
    for m in mons:
        expected = m.probe.predict_proba(store.load(m.hook_name))[:, 1].numpy()
        got = np.array([r.extra["monitors"][m.name] for r in results])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r.text for r in results] == [it["transcript"] for it in store.items()]


def test_saved_probe_path_and_errors(setup, tmp_path):
    model, data, probes = setup
    path = probes["bin"].save(tmp_path / "p")
    mon = ProbeMonitor("p", path, ENC)  # a path loads the probe
    assert isinstance(mon.probe, LinearProbe) and mon.pooling == "mean"
    assert ProbeMonitor("d", probes["bin"], DEC).pooling == "final"
    with pytest.raises(ValueError, match="pooling 'none'"):
        ProbeMonitor("x", probes["bin"], ENC, pooling="none")
    with pytest.raises(ValueError, match="'final' is for decoder hooks"):
        ProbeMonitor("x", probes["bin"], ENC, pooling="final")
    with pytest.raises(ValueError, match="positive class 3"):
        ProbeMonitor("x", probes["bin"], ENC, positive=3)
    audio = data[0]["audio"]
    with pytest.raises(KeyError):
        transcribe_with_monitors(model, audio, ProbeMonitor("x", probes["bin"], "encoder.blocks.9.hook_resid_post"))
    with pytest.raises(ValueError, match="unique"):
        transcribe_with_monitors(model, audio, [ProbeMonitor("x", probes["bin"], ENC)] * 2)
    small = LinearProbe(8, "classification", [0, 1])
    with pytest.raises(ValueError, match="reads 8"):
        transcribe_with_monitors(model, audio, ProbeMonitor("x", small, ENC), max_new_tokens=2)
    feats = model.prepare_features(audio)["input_features"]
    with pytest.raises(ValueError, match="raw audio"):
        transcribe_with_monitors(model, feats, ProbeMonitor("x", probes["bin"], ENC))
