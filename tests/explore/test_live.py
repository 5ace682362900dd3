"""The live explorer's backend on the real tiny.en: its numbers are the public patching API's, the
exported code reproduces them, bad requests are refused by name, long audio takes a window choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

SAID = "She opened the window and looked at the sea."
HEAD = "decoder.blocks.3.cross_attn.head.2"


@pytest.fixture(scope="module")
def clip():
    from hooked_asr.datasets.espeak import synthesize

    return synthesize(SAID, voice="en-us")


@pytest.fixture(scope="module")
def session(whisper_tiny_en, clip):
    from hooked_asr.explore.live import LiveSession

    s = LiveSession(whisper_tiny_en, clip, name="sea", model_name="whisper-tiny.en")
    yield s
    s.close()


MIXED = [
    {"component": HEAD, "method": "zero"},
    {"component": "encoder.blocks.1.mlp", "method": "mean", "from": 0.5, "to": 1.5},
    {"component": "decoder.blocks.2.cross_attn.head.0", "method": "noise", "alpha": 0.5},
    {"component": "decoder.blocks.1.mlp", "method": "noise", "tokens": [1, 4]},
    {"component": "decoder.blocks.3.cross_attn", "method": "mask", "from": 0.6, "to": 1.1},
]


def test_clean_view_is_the_explorer_of_the_clip(session, whisper_tiny_en, clip):
    assert session.clean_text == whisper_tiny_en.transcribe(clip).text
    assert session.steps[-1] == whisper_tiny_en.cfg.eos_token_id
    assert session.view.data["transcript"]["text"] == session.clean_text


@torch.no_grad()
def test_zero_ablating_a_head_matches_the_patching_api(session, whisper_tiny_en, clip):
    from hooked_asr.patching import patched, run_with_interventions, zero_ablate

    specs = [{"component": HEAD, "method": "zero"}]
    tf = session.teacher_forced(specs)
    tr = session.transcribe(specs)
    ivs = [zero_ablate(HEAD)]
    inputs = whisper_tiny_en.teacher_forced_inputs(clip, continuation=session.steps)
    logits = run_with_interventions(whisper_tiny_en, ivs, **inputs.kwargs)
    p = inputs.prompt_len
    want = torch.log_softmax(logits[0, p - 1 : -1], -1).gather(-1, inputs.tokens[0, p:, None])[:, 0]
    np.testing.assert_allclose(tf["logprobs_after"], want.numpy(), atol=1e-6)
    with patched(whisper_tiny_en, ivs):
        assert tr["text"] == whisper_tiny_en.transcribe(clip).text
    clean = whisper_tiny_en(**inputs.kwargs)
    np.testing.assert_allclose(
        tf["logprobs_before"],
        torch.log_softmax(clean[0, p - 1 : -1], -1).gather(-1, inputs.tokens[0, p:, None])[:, 0].numpy(),
        atol=1e-6,
    )
    assert tf["logprobs_after"] != tf["logprobs_before"]  # this head matters to the clip
    # The changed views have the clean view's layout (the page draws them with the same code).
    assert tf["audio_attention"]["columns"] == session.view.data["audio_attention"]["columns"]
    assert len(tf["logit_lens"]["chosen_prob"][0]) == len(session.steps)
    assert tf["logit_lens"]["chosen_prob"][-1] != session.view.data["logit_lens"]["chosen_prob"][-1]


def test_a_mask_on_every_cross_attention_head_changes_the_transcript_as_the_api_does(session, whisper_tiny_en, clip):
    from hooked_asr.patching import patched
    from hooked_asr.patching.attention_masks import frames_between, mask_attention

    specs = [{"component": "decoder.blocks.3.cross_attn", "method": "mask", "from": 0.5, "to": 1.2}]
    out = session.transcribe(specs)
    # the masked heads' attention over the audio changes (the page draws it under the clean one)
    assert session.teacher_forced(specs)["audio_attention"]["data"] != session.view.data["audio_attention"]["data"]
    with patched(whisper_tiny_en, [mask_attention("decoder.blocks.3.cross_attn", frames_between(0.5, 1.2))]):
        assert out["text"] == whisper_tiny_en.transcribe(clip).text
    assert out["text"] != session.clean_text  # hiding "window" from the last layer changes the words
    assert any(op != "=" for op, _ in out["diff"])


def test_exported_code_reproduces_the_numbers(session, capsys):
    tf = session.teacher_forced(MIXED)
    tr = session.transcribe(MIXED)
    code = session.to_python(MIXED)
    ns: dict = {}
    exec(compile(code, "exported.py", "exec"), ns)  # a fresh model from the registry, as a user would run it
    np.testing.assert_allclose(ns["logprobs"].numpy(), tf["logprobs_after"], atol=1e-5)
    assert ns["out"].text == tr["text"]
    assert ns["clean"].text == session.clean_text
    printed = capsys.readouterr().out
    assert f"patched: {tr['text']}" in printed


def test_bad_interventions_are_refused_by_name(session):
    from hooked_asr.explore.live_audio import LiveError

    bad = [
        ([{"component": HEAD, "method": "delete"}], "method 'delete'"),
        ([{"component": HEAD, "method": "zero", "code": "import os"}], "unknown keys ['code']"),
        ([{"component": "decoder.blocks.9.mlp", "method": "zero"}], "decoder.blocks.9"),
        ([{"component": "encoder.blocks.0.mlp", "method": "zero", "tokens": [0, 2]}], "indexed by frames"),
        ([{"component": "encoder.blocks.0.mlp", "method": "zero", "from": 2, "to": 1}], "from < to"),
        ([{"component": "encoder.blocks.0.mlp", "method": "mask", "from": 0, "to": 1}], "needs an attention"),
        ([{"component": HEAD, "method": "mask"}], "needs the range"),
        ([{"component": HEAD, "method": "zero", "alpha": float("nan")}], "alpha"),
        ("zero", "must be a list"),
    ]
    for specs, msg in bad:
        with pytest.raises(LiveError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            session.validate(specs)
    with pytest.raises(LiveError, match="unknown action"):
        session.handle("exec", {})


def test_long_audio_takes_a_window_choice(whisper_tiny_en, clip):
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.live_audio import LiveError, pick_window

    long = np.concatenate([clip, np.zeros(16000 * 30, np.float32), clip])  # > 30 s
    with pytest.raises(LiveError, match="--start"):
        pick_window(long)
    w = pick_window(long, start=len(clip) / 16000 + 30, window=5.0)
    np.testing.assert_array_equal(w, long[len(clip) + 30 * 16000 :][: 5 * 16000])
    with pytest.raises(LiveError, match="window=40"):
        pick_window(long, 0, 40)
    s = LiveSession(whisper_tiny_en, long, start=len(clip) / 16000 + 30, window=5.0, encoder_lens_max_new_tokens=8)
    try:
        assert s.clean_text == whisper_tiny_en.transcribe(w).text
        assert s.state()["total"] == pytest.approx(len(long) / 16000)
    finally:
        s.close()


def test_word_diff():
    from hooked_asr.explore.live import word_diff

    assert word_diff("she opened the window", "she opened the door") == [
        ["=", "she opened the"],
        ["-", "window"],
        ["+", "door"],
    ]
    assert word_diff("a b", "a b") == [["=", "a b"]]


def test_explore_command_on_long_audio_uses_the_window(whisper_tiny_en, clip, tmp_path):
    import json
    import re

    import soundfile as sf

    from hooked_asr.cli import main

    long = np.concatenate([np.zeros(16000 * 31, np.float32), clip])
    wav = tmp_path / "long.wav"
    sf.write(wav, long, 16000, subtype="FLOAT")
    with pytest.raises(SystemExit, match="--start"):
        main(["explore", str(wav), "--out", str(tmp_path / "x.html")])
    out = tmp_path / "w.html"
    assert main(["explore", str(wav), "--start", "30.5", "--window", "2.5", "--out", str(out)]) == 0
    data = json.loads(
        re.search(r'<script type="application/json" id="ha-data">(.*?)</script>', out.read_text(), re.S)[1]
    )
    assert data["audio"]["duration"] == pytest.approx(2.5)
    assert data["transcript"]["text"] == whisper_tiny_en.transcribe(long[int(30.5 * 16000) : int(33.0 * 16000)]).text


def test_widget_answers_through_the_same_backend(session):
    pytest.importorskip("anywidget")
    from hooked_asr.explore.widget import _widget_class

    w = _widget_class()(session)
    assert "window.HA_LIVE" in w.page and '"transport":"widget"' in w.page
    specs = [{"component": HEAD, "method": "zero"}]
    reply = w.answer({"id": 7, "action": "teacher_forced", "body": {"interventions": specs}})
    assert reply["id"] == 7 and reply["result"]["logprobs_after"] == session.teacher_forced(specs)["logprobs_after"]
    bad = w.answer(
        {"id": 8, "action": "teacher_forced", "body": {"interventions": [{"component": HEAD, "method": "x"}]}}
    )
    assert "method 'x'" in bad["error"]
    sent = []
    w.send = sent.append  # what the comm would carry back to the page
    w._on_message(w, {"id": 9, "action": "export", "body": {"interventions": specs}}, [])
    assert sent[0]["id"] == 9 and "zero_ablate('decoder.blocks.3.cross_attn.head.2')" in sent[0]["result"]["code"]


@torch.no_grad()
def test_a_model_without_cross_attention_is_explored_live_too():
    """Qwen2-Audio (random tiny weights): its heads are decoder self-attention heads; the session's
    numbers are still the patching API's."""
    from hooked_asr import HookedQwen2Audio
    from hooked_asr.audio import window_samples
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.patching import patched, run_with_interventions, zero_ablate
    from tests.conftest import make_hf_qwen2_audio, make_tokenizer

    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("mha"), tokenizer=make_tokenizer())
    audio = np.random.default_rng(0).normal(0, 0.1, window_samples(model) // 2).astype(np.float32)
    s = LiveSession(model, audio, encoder_lens_max_new_tokens=4, model_name="tiny-qwen")
    try:
        specs = [{"component": "decoder.blocks.0.attn.head.1", "method": "zero"}]
        tf = s.teacher_forced(specs)
        logits = run_with_interventions(model, [zero_ablate("decoder.blocks.0.attn.head.1")], **s.tf.kwargs)
        p = s.tf.prompt_len
        want = torch.log_softmax(logits[0, p - 1 : -1], -1).gather(-1, s.tf.tokens[0, p:, None])[:, 0]
        np.testing.assert_allclose(tf["logprobs_after"], want.numpy(), atol=1e-5)
        assert tf["audio_attention"]["kind"] == "audio_prefix"
        with patched(model, [zero_ablate("decoder.blocks.0.attn.head.1")]):
            want = model.transcribe(audio)
        seen: list[list[int]] = []
        got = s.transcribe(specs, on_tokens=lambda ids, text: seen.append(ids))
        assert got["text"] == want.text
        # the streamed tokens read back from the decoder's inputs (an audio-prefix model too)
        assert all(ids == got["tokens"][: len(ids)] for ids in seen)
        assert len(seen) >= len(got["tokens"]) - 1
    finally:
        s.close()


def test_steering_an_sae_feature_matches_steer_and_exports(whisper_tiny_en, clip, tmp_path):
    """An SAE's feature edited over a time range (error term kept): the session's numbers are
    :func:`hooked_asr.sae.steering.steer`'s, and the exported code (loading the SAE from its folder) reproduces them."""
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.live_audio import LiveError
    from hooked_asr.patching import patched, zero_ablate
    from hooked_asr.patching.attention_masks import frames_between
    from hooked_asr.sae.model import identity_sae, save_sae
    from hooked_asr.sae.steering import FeatureIntervention, steer

    sae = identity_sae(whisper_tiny_en.cfg.encoder.d_model, hook_name="encoder.blocks.2.hook_resid_post")
    folder = save_sae(sae, tmp_path / "sae")
    s = LiveSession(whisper_tiny_en, clip, sae_path=folder, encoder_lens_max_new_tokens=8)
    try:
        assert s.view.data["sae"]["d_sae"] == sae.d_sae and "steer" in s.state()["methods"]
        specs = [
            {"method": "steer", "feature": 5, "mode": "add", "value": 40.0, "from": 0.3, "to": 1.2},
            {"method": "steer", "feature": 9, "mode": "clamp", "value": 0.0, "from": 0.3, "to": 1.2},
            {"component": "decoder.blocks.0.cross_attn.head.4", "method": "zero"},
        ]
        tf, tr = s.teacher_forced(specs), s.transcribe(specs)
        mask = torch.zeros(whisper_tiny_en.cfg.encoder.n_ctx, dtype=torch.bool)
        mask[list(frames_between(0.3, 1.2))] = True
        edits = [FeatureIntervention(5, "add", 40.0), FeatureIntervention(9, "clamp", 0.0)]
        with (
            steer(whisper_tiny_en, s.sae, edits, frame_mask=mask),
            patched(whisper_tiny_en, [zero_ablate("decoder.blocks.0.cross_attn.head.4")]),
        ):
            assert tr["text"] == whisper_tiny_en.transcribe(clip).text
        assert tf["sum_after"] != tf["sum_before"]
        ns: dict = {}
        exec(compile(s.to_python(specs), "exported.py", "exec"), ns)
        assert ns["out"].text == tr["text"]
        np.testing.assert_allclose(ns["logprobs"].numpy(), tf["logprobs_after"], atol=1e-5)
        with pytest.raises(LiveError, match="one time range"):
            s.validate([specs[0], {"method": "steer", "feature": 1, "mode": "add", "value": 1.0}])
        with pytest.raises(LiveError, match="feature must be an integer"):
            s.validate([{"method": "steer", "feature": sae.d_sae, "mode": "add", "value": 1.0}])
    finally:
        s.close()
    plain = LiveSession(whisper_tiny_en, clip, encoder_lens_max_new_tokens=8)
    try:
        with pytest.raises(LiveError, match="needs an SAE"):
            plain.validate([{"method": "steer", "feature": 1}])
    finally:
        plain.close()


OTHER = "He closed the door and walked to the car."


@torch.no_grad()
def test_patching_from_another_clip_matches_reference_cache_and_exports(session, whisper_tiny_en, clip):
    """Method 'other': the activation on a second clip, cut or padded to this clip's length and run with the
    clean prompt and transcript (hooked_asr.patching.reference_cache): the session's numbers are the API's."""
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore.live_audio import LiveError
    from hooked_asr.patching import interpolate, patched, reference_cache, run_with_interventions
    from hooked_asr.patching.attention_masks import frames_between
    from hooked_asr.patching.references import other_utterance

    with pytest.raises(LiveError, match="second clip"):
        session.validate([{"component": HEAD, "method": "other"}])
    other = synthesize(OTHER, voice="en-us")
    session.set_other(other, name="door")
    assert session.state()["other"]["name"] == "door" and "other" in session.state()["methods"]
    specs = [
        {"component": "encoder.blocks.2.attn.head.1", "method": "other", "from": 0.3, "to": 1.5},
        {"component": "decoder.blocks.2.cross_attn.head.3", "method": "other", "tokens": [2, 6]},
        {"component": "decoder.blocks.3.mlp", "method": "other", "alpha": 0.5},
    ]
    tf, tr = session.teacher_forced(specs), session.transcribe(specs)
    inputs = whisper_tiny_en.teacher_forced_inputs(clip, continuation=session.steps)
    hooks = ["encoder.blocks.2.attn.hook_z", "decoder.blocks.2.cross_attn.hook_z", "decoder.blocks.3.hook_mlp_out"]
    ref = reference_cache(whisper_tiny_en, inputs.kwargs, other_utterance(clip, other), hooks)
    p = inputs.prompt_len
    ivs = [
        interpolate("encoder.blocks.2.attn.head.1", ref, positions=frames_between(0.3, 1.5), missing="error"),
        interpolate("decoder.blocks.2.cross_attn.head.3", ref, positions=range(p + 2, p + 6), missing="error"),
        interpolate("decoder.blocks.3.mlp", ref, 0.5, missing="keep"),
    ]
    logits = run_with_interventions(whisper_tiny_en, ivs, **inputs.kwargs)
    want = torch.log_softmax(logits[0, p - 1 : -1], -1).gather(-1, inputs.tokens[0, p:, None])[:, 0]
    np.testing.assert_allclose(tf["logprobs_after"], want.numpy(), atol=1e-5)
    assert tf["sum_after"] != tf["sum_before"]
    with patched(whisper_tiny_en, ivs):
        assert tr["text"] == whisper_tiny_en.transcribe(clip).text
    ns: dict = {}
    exec(compile(session.to_python(specs), "exported.py", "exec"), ns)
    np.testing.assert_allclose(ns["logprobs"].numpy(), tf["logprobs_after"], atol=1e-5)
    assert ns["out"].text == tr["text"]
    n = len(session.steps)
    with pytest.raises(LiveError, match=f"b <= {n}"):
        session.validate([{"component": "decoder.blocks.0.mlp", "method": "other", "tokens": [1, n + 1]}])


@torch.no_grad()
def test_steering_along_a_probe_direction_matches_steer_direction_and_exports(whisper_tiny_en, clip, tmp_path):
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.live_audio import LiveError
    from hooked_asr.patching import patched, zero_ablate
    from hooked_asr.patching.attention_masks import frames_between
    from hooked_asr.probing.probe import LinearProbe
    from hooked_asr.sae.steering import steer_direction

    hook = "encoder.blocks.2.hook_resid_post"
    probe = LinearProbe(whisper_tiny_en.cfg.encoder.d_model, classes=[0, 1])
    probe.linear.weight.copy_(torch.randn(1, probe.d_in, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(LiveError, match="probe_hook"):
        LiveSession(whisper_tiny_en, clip, probe=probe)
    s = LiveSession(whisper_tiny_en, clip, probe=probe, probe_hook=hook, encoder_lens_max_new_tokens=8)
    try:
        specs = [
            {"method": "probe", "value": 20.0, "from": 0.4, "to": 1.4},
            {"component": "decoder.blocks.0.cross_attn.head.4", "method": "zero"},
        ]
        tf, tr = s.teacher_forced(specs), s.transcribe(specs)
        mask = torch.zeros(whisper_tiny_en.cfg.encoder.n_ctx, dtype=torch.bool)
        mask[list(frames_between(0.4, 1.4))] = True
        inputs = s.tf
        with (
            steer_direction(whisper_tiny_en, hook, probe.direction, 20.0, frame_mask=mask),
            patched(whisper_tiny_en, [zero_ablate("decoder.blocks.0.cross_attn.head.4")]),
        ):
            assert tr["text"] == whisper_tiny_en.transcribe(clip).text
            logits = whisper_tiny_en(**inputs.kwargs)
        p = inputs.prompt_len
        want = torch.log_softmax(logits[0, p - 1 : -1], -1).gather(-1, inputs.tokens[0, p:, None])[:, 0]
        np.testing.assert_allclose(tf["logprobs_after"], want.numpy(), atol=1e-5)
        assert tf["sum_after"] < tf["sum_before"] - 1  # the push matters
        ns: dict = {}
        exec(compile(s.to_python(specs), "exported.py", "exec"), ns)
        np.testing.assert_allclose(ns["logprobs"].numpy(), tf["logprobs_after"], atol=1e-5)
        assert ns["out"].text == tr["text"]
        with pytest.raises(LiveError, match="value"):
            s.validate([{"method": "probe", "value": float("inf")}])
    finally:
        s.close()


def test_steering_along_a_direction_is_the_added_vector(whisper_tiny_en, clip):
    """steer_direction adds c * d at the hook, on the masked frames only (the one steering hook, as the SAE's)."""
    from hooked_asr.sae.steering import steer_direction

    hook = "encoder.blocks.1.hook_resid_post"
    feats = whisper_tiny_en.prepare_features(clip)
    d = torch.randn(whisper_tiny_en.cfg.encoder.d_model)
    mask = torch.zeros(whisper_tiny_en.cfg.encoder.n_ctx, dtype=torch.bool)
    mask[10:20] = True
    with torch.no_grad():
        clean = whisper_tiny_en.encode(**feats, stop_at_layer=2)
        seen = {}
        with (
            steer_direction(whisper_tiny_en, hook, d, 3.0, frame_mask=mask),
            whisper_tiny_en.hooks(fwd_hooks=[(hook, lambda x, hook: seen.setdefault("x", x.clone()))]),
        ):
            whisper_tiny_en.encode(**feats, stop_at_layer=2)
    torch.testing.assert_close(seen["x"][0, 10:20], clean[0, 10:20] + 3.0 * d)
    torch.testing.assert_close(seen["x"][0, 20:], clean[0, 20:])


def test_the_re_transcription_streams_its_tokens(session, whisper_tiny_en):
    """Partial transcripts while decoding: each is a prefix of the final transcript, the last is all of it."""
    import time

    specs = [{"component": HEAD, "method": "zero"}]
    seen: list[list[int]] = []
    out = session.transcribe(specs, on_tokens=lambda ids, text: seen.append(ids))
    assert len(seen) >= 3 and seen[-1] == out["tokens"]
    assert all(s == out["tokens"][: len(s)] for s in seen)
    jid = session.start_transcribe(specs)
    deadline = time.monotonic() + 120
    while session.job(jid)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    job = session.job(jid)
    assert job["state"] == "done" and job["partial"] == whisper_tiny_en.to_string(out["tokens"])
    assert job["partial_tokens"] == len(out["tokens"]) and job["limit"] > 0
