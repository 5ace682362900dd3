"""``hooked-asr explore --serve`` on the real tiny.en, driven in headless Chromium (Debian's ``chromium``)
over the DevTools protocol: click a head and ablate it, the transcript shown is the one the Python API
gives for the same intervention; the exported code reproduces the page's numbers; an uploaded WAV
becomes the clip. Screenshots go to the test's tmp folder and to ``$HOOKED_ASR_ARTIFACTS`` when set."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]

SAID = "She opened the window and looked at the sea."
LAYER, HEAD = 0, 4  # zero-ablating this cross-attention head makes tiny.en hear "the window" for "the sea"
ROOT = "document.getElementById('ha-root').dataset"


def _keep(png: Path) -> None:
    out = os.environ.get("HOOKED_ASR_ARTIFACTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(out) / png.name)


@pytest.fixture(scope="module")
def served():
    """The CLI in a subprocess, as a user starts it; yields the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hooked_asr.cli", "explore", "--say", SAID, "--serve", "--model", "whisper-tiny.en"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    url, lines = None, []
    deadline = time.monotonic() + 300
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"live explorer at (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        url = m[1] if m else None
    if url is None:
        proc.kill()
        raise AssertionError("the server printed no URL:\n" + "".join(lines))
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(b, expression, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = b.evaluate(expression)
        if v:
            return v
        time.sleep(0.25)
    status = b.evaluate("document.getElementById('ha-live-status').textContent")
    raise AssertionError(f"timed out waiting for {expression}; status: {status}")


def test_clicking_a_head_ablates_it_as_the_python_api_does(served, whisper_tiny_en, tmp_path):
    import torch

    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import patched, zero_ablate

    comp = f"decoder.blocks.{LAYER}.cross_attn.head.{HEAD}"
    with patched(whisper_tiny_en, [zero_ablate(comp)]):
        want = whisper_tiny_en.transcribe(synthesize(SAID)).text
    assert want != SAID  # the head matters: the page must show a change

    with Chromium(width=1300, height=1000, timeout=300) as b:
        b.open(served, settle_ms=500)
        assert b.evaluate("document.querySelector('.ha-heard b').textContent") == SAID
        # no optional row (SAE, probe: none given here) leaks a JavaScript null into the page's text
        assert "null" not in b.evaluate("document.body.innerText")
        b.click(f'.ha-head[data-layer="{LAYER}"][data-head="{HEAD}"]')
        assert b.evaluate("document.getElementById('ha-live-comp').value") == comp  # the form follows the head picked
        b.click("#ha-live-ablate-head")
        shown = _wait(b, f"{ROOT}.liveText")
        assert shown == want
        assert b.evaluate("document.getElementById('ha-live-text').textContent") == want
        diff = b.evaluate(
            "Array.from(document.querySelectorAll('#ha-live-diff span')).map(s => s.className + ':' + s.textContent)"
        )
        assert "ha-del:sea." in diff and "ha-ins:window." in diff
        tf_sum = float(_wait(b, f"{ROOT}.liveTf"))
        assert b.evaluate("document.querySelectorAll('#ha-live-lp-table tr').length") == 1 + len(
            b.evaluate("window.hookedAsrExplorer.data.transcript.tokens")
        )
        b.click('.ha-token[data-i="8"]')  # "sea": the intervened lens and attention follow the token picked
        assert "token 8" in b.evaluate("document.getElementById('ha-live-strip-label').textContent")
        shot = b.screenshot(tmp_path / "live_explorer.png", full_page=True)
        b.click("#ha-live-export")
        code = _wait(b, "document.getElementById('ha-live-code').textContent")
        assert not b.errors(), b.errors()
    ns: dict = {}
    exec(compile(code, "exported.py", "exec"), ns)
    assert ns["out"].text == want
    assert float(ns["logprobs"].sum()) == pytest.approx(tf_sum, abs=1e-4)
    assert isinstance(ns["logprobs"], torch.Tensor)
    _keep(shot)


def test_a_mask_drawn_on_the_spectrogram_matches_the_python_api(served, whisper_tiny_en):
    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import patched
    from hooked_asr.patching.attention_masks import frames_between, mask_attention

    with Chromium(width=1300, height=1000, timeout=300) as b:
        b.open(served, settle_ms=300)
        box = b.evaluate(
            "(() => { const e = document.getElementById('ha-mel'); e.scrollIntoView({block: 'center'}); "
            "const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
        )
        T, W = b.evaluate("window.hookedAsrExplorer.T"), b.evaluate("window.hookedAsrExplorer.W")
        x0, x1, y = box[0] + 1.9 / T * W, box[0] + 2.3 / T * W, box[1] + box[3] / 2  # over "sea": 1.9-2.3 s
        for kind, x in (("mousePressed", x0), ("mouseMoved", x1), ("mouseReleased", x1)):
            b.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1, modifiers=8)  # shift
        a, c = (
            float(b.evaluate("document.getElementById('ha-live-from').value")),
            float(b.evaluate("document.getElementById('ha-live-to').value")),
        )
        assert a == pytest.approx(1.9, abs=0.02) and c == pytest.approx(2.3, abs=0.02)
        b.evaluate("document.getElementById('ha-live-comp').value = 'decoder.blocks.3.cross_attn'")
        b.evaluate("document.getElementById('ha-live-method').value = 'mask'")
        b.click("#ha-live-add")
        assert "mask decoder.blocks.3.cross_attn" in b.evaluate("document.getElementById('ha-live-list').textContent")
        b.click("#ha-live-transcribe")
        shown = _wait(b, f"{ROOT}.liveText")
        assert not b.errors(), b.errors()
    with patched(whisper_tiny_en, [mask_attention("decoder.blocks.3.cross_attn", frames_between(a, c))]):
        assert shown == whisper_tiny_en.transcribe(synthesize(SAID)).text


def test_uploading_a_wav_shows_its_transcript(served, whisper_tiny_en, tmp_path):
    import soundfile as sf

    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize

    wav = tmp_path / "calm.wav"
    sf.write(wav, synthesize("The sea was calm and the sky was blue."), 16000, subtype="PCM_16")
    want = whisper_tiny_en.transcribe(str(wav)).text
    with Chromium(width=1300, height=1000, timeout=300) as b:
        b.open(served, settle_ms=300)
        doc = b.send("DOM.getDocument")["root"]["nodeId"]
        node = b.send("DOM.querySelector", nodeId=doc, selector="#ha-live-file")["nodeId"]
        b.send("DOM.setFileInputFiles", nodeId=node, files=[str(wav)])
        b.click("#ha-live-upload")
        b.wait_for_event("Page.loadEventFired", timeout=300)  # the page reloads on the new clip
        time.sleep(0.5)
        assert b.evaluate("document.querySelector('.ha-heard b').textContent") == want
        assert "calm" in b.evaluate("document.getElementById('ha-live-audio-note').textContent")
        assert b.evaluate("window.hookedAsrExplorer.data.audio.duration") == pytest.approx(
            sf.info(wav).duration, abs=1e-3
        )
        # The microphone path's WAV writer: a recording's samples come back from the WAV it writes.
        err = b.evaluate("""(async () => {
            const n = 4000, x = new Float32Array(n);
            for (let i = 0; i < n; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * 440 * i / 16000);
            const blob = window.hookedAsrLive.wavBytes(x, 16000);
            const pcm = await new OfflineAudioContext(1, n, 16000).decodeAudioData(await blob.arrayBuffer());
            const y = pcm.getChannelData(0);
            let m = 0; for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
            return [pcm.sampleRate, pcm.length, m];
        })()""")
        assert err[0] == 16000 and err[1] == 4000 and err[2] < 1 / 16000  # 16-bit quantisation
        assert not b.errors(), b.errors()


def test_an_sae_feature_picked_in_the_panel_is_steered(whisper_tiny_en):
    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.server import LiveServer
    from hooked_asr.sae.model import identity_sae

    sae = identity_sae(whisper_tiny_en.cfg.encoder.d_model, hook_name="encoder.blocks.2.hook_resid_post")
    session = LiveSession(whisper_tiny_en, synthesize(SAID), sae=sae, encoder_lens_max_new_tokens=8)
    with LiveServer(session) as srv, Chromium(width=1300, height=1000, timeout=300) as b:
        b.open(srv.url, settle_ms=300)
        b.click('.ha-sae-btn[data-i="1"]')  # the SAE panel: feature 2nd, with its playable top frames
        f = session.view.data["sae"]["features"][1]["feature"]
        assert b.evaluate("document.getElementById('ha-live-feature').value") == str(f)
        assert b.evaluate("document.getElementById('ha-live-method').value") == "steer"
        b.evaluate("document.getElementById('ha-live-value').value = '30'")
        b.click("#ha-live-add")
        b.click("#ha-live-tf")
        got = float(_wait(b, f"{ROOT}.liveTf"))
        assert b.evaluate("document.querySelectorAll('#ha-sae-info button').length") > 0  # playable snippets
        assert not b.errors(), b.errors()
    want = session.teacher_forced([{"method": "steer", "feature": f, "mode": "add", "value": 30.0}])["sum_after"]
    assert got == pytest.approx(want, abs=1e-9)
    session.close()


def test_patching_a_head_from_an_uploaded_other_clip_matches_the_python_api(served, whisper_tiny_en, tmp_path):
    """Upload a second clip as the reference, pick a head, method 'other': the transcript the page shows (it
    streams in while decoding) and its log-probs are what the patching API gives with that clip's activations
    (on the clip the page shows: an earlier test may have uploaded another), and the exported code's."""
    import soundfile as sf
    import torch

    from e2e.browser import Chromium
    from hooked_asr.audio import load_audio
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.patching import interpolate, patched, reference_cache
    from hooked_asr.patching.references import other_utterance

    wav = tmp_path / "door.wav"
    sf.write(wav, synthesize("He closed the door and walked to the car."), 16000, subtype="FLOAT")
    comp = f"decoder.blocks.{LAYER}.cross_attn.head.{HEAD}"
    with Chromium(width=1300, height=1000, timeout=300) as b:
        b.open(served, settle_ms=300)
        doc = b.send("DOM.getDocument")["root"]["nodeId"]
        node = b.send("DOM.querySelector", nodeId=doc, selector="#ha-live-file")["nodeId"]
        b.send("DOM.setFileInputFiles", nodeId=node, files=[str(wav)])
        b.click("#ha-live-upload-other")
        assert _wait(b, f"{ROOT}.liveOther") == "door"
        assert "door" in b.evaluate("document.getElementById('ha-live-other-note').textContent")
        b.click(f'.ha-head[data-layer="{LAYER}"][data-head="{HEAD}"]')
        b.evaluate("document.getElementById('ha-live-method').value = 'other'")
        b.click("#ha-live-add")
        assert f"other {comp}" in b.evaluate("document.getElementById('ha-live-list').textContent")
        b.click("#ha-live-transcribe")
        shown = _wait(b, f"{ROOT}.liveText")
        b.click("#ha-live-tf")
        tf_sum = float(_wait(b, f"{ROOT}.liveTf"))
        b.click("#ha-live-export")
        code = _wait(b, "document.getElementById('ha-live-code').textContent")
        assert not b.errors(), b.errors()
    ns: dict = {}
    exec(compile(code, "exported.py", "exec"), ns)
    assert ns["out"].text == shown
    assert float(ns["logprobs"].sum()) == pytest.approx(tf_sum, abs=1e-4)
    clip = ns["audio"]  # the page's clip, as the page wrote it
    steps = list(whisper_tiny_en.transcribe(clip).tokens) + [whisper_tiny_en.cfg.eos_token_id]
    tf = whisper_tiny_en.teacher_forced_inputs(clip, continuation=steps)
    ref = reference_cache(
        whisper_tiny_en, tf.kwargs, other_utterance(clip, load_audio(str(wav))), ["decoder.blocks.0.cross_attn.hook_z"]
    )
    with patched(whisper_tiny_en, [interpolate(comp, ref, missing="keep")]):
        assert shown == whisper_tiny_en.transcribe(clip).text
        with torch.no_grad():
            logits = whisper_tiny_en(**tf.kwargs)
    p = tf.prompt_len
    lp = torch.log_softmax(logits[0, p - 1 : -1], -1).gather(-1, tf.tokens[0, p:, None])[:, 0]
    assert float(lp.sum()) == pytest.approx(tf_sum, abs=1e-4)


def test_the_re_transcription_streams_into_the_page(whisper_tiny_en):
    """While a re-transcription decodes, the page shows its tokens so far, with progress. Each decoding step is
    slowed (a permanent hook that sleeps) so that the page's polling sees the decoding under way."""
    from e2e.browser import Chromium
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.server import LiveServer

    session = LiveSession(whisper_tiny_en, synthesize(SAID), encoder_lens_max_new_tokens=8)

    def slow(x, hook):
        if whisper_tiny_en.decoding_state is not None:
            time.sleep(0.3)

    whisper_tiny_en.add_hook("decoder.hook_embed", slow, is_permanent=True)
    try:
        with LiveServer(session) as srv, Chromium(width=1300, height=1000, timeout=300) as b:
            b.open(srv.url, settle_ms=300)
            b.click(f'.ha-head[data-layer="{LAYER}"][data-head="{HEAD}"]')
            b.click("#ha-live-add")
            b.click("#ha-live-transcribe")
            partial = _wait(b, "(document.getElementById('ha-live-partial') || {}).textContent", timeout=120)
            assert "decoding (" in partial and "tokens so far" in partial
            assert b.evaluate("document.getElementById('ha-live-progress').style.visibility") == "visible"
            assert b.evaluate("document.getElementById('ha-live-progress').value") > 0
            shown = _wait(b, f"{ROOT}.liveText")
            streamed = b.evaluate(f"{ROOT}.livePartial")
            assert not b.errors(), b.errors()
    finally:
        whisper_tiny_en.reset_hooks(including_permanent=True)
        session.close()
    assert streamed.strip() and shown.startswith(streamed.strip())  # what streamed in is the start of the answer
