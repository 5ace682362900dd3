"""The live explorer's HTTP server: the token, the Host check, no file by path, the upload limit, only the
documented actions; an upload becomes the clip shown, and its transcript is the model's."""

from __future__ import annotations

import http.client
import io
import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SAID = "Thank you very much for your help."


@pytest.fixture(scope="module")
def server(whisper_tiny_en):
    from hooked_asr.datasets.espeak import synthesize
    from hooked_asr.explore.live import LiveSession
    from hooked_asr.explore.server import LiveServer

    session = LiveSession(whisper_tiny_en, synthesize(SAID), name="thanks", encoder_lens_max_new_tokens=8)
    srv = LiveServer(session, max_upload_bytes=200_000).start()
    yield srv
    srv.stop()
    session.close()


def request(srv, method, path, body=None, headers=None, token=True):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    h = dict(headers or {})
    if token is True:
        h.setdefault("X-HA-Token", srv.token)
    elif token:
        h["X-HA-Token"] = token
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def api(srv, action, body):
    status, data = request(srv, "POST", f"/api/{action}", json.dumps(body), {"Content-Type": "application/json"})
    return status, json.loads(data)


def wait_job(srv, jid):
    for _ in range(600):
        status, j = api(srv, "job", {"id": jid})
        assert status == 200
        if j["state"] != "running":
            return j
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def test_loopback_and_a_token_in_the_url(server):
    assert server.host == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=") and len(server.token) >= 32
    status, page = request(server, "GET", f"/?token={server.token}", token=False)
    assert status == 200 and b"window.HA_LIVE" in page and b"ha-data" in page


def test_requests_without_the_token_are_refused(server):
    assert request(server, "GET", "/", token=False)[0] == 403
    assert request(server, "GET", "/?token=wrong", token=False)[0] == 403
    assert request(server, "GET", "/", token="x" * len(server.token))[0] == 403
    status, body = request(server, "POST", "/api/state", b"{}", token=False)
    assert status == 403 and b"token" in body
    assert request(server, "POST", "/upload", b"RIFF", token=False)[0] == 403


def test_a_foreign_host_header_is_refused(server):
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends its own Host
    assert request(server, "GET", "/", headers={"Host": f"evil.example:{server.port}"})[0] == 403
    assert request(server, "GET", "/", headers={"Host": f"localhost:{server.port}"})[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/../../etc/passwd",
        "//etc/passwd",
        "/explorer.js",
    ],
)
def test_no_file_is_served_by_path(server, path):
    status, body = request(server, "GET", path)
    assert status == 404 and b"root:" not in body
    status, body = request(server, "POST", path, b"{}")
    assert status == 404 and b"root:" not in body


def test_only_the_documented_actions_run(server):
    status, j = api(server, "eval", {"code": "__import__('os').system('id')"})
    assert status == 404 and "no such action" in j["error"]
    status, j = api(
        server,
        "teacher_forced",
        {"interventions": [{"component": "decoder.blocks.0.mlp", "method": "zero", "hook": "lambda x: x"}]},
    )
    assert status == 400 and "unknown keys ['hook']" in j["error"]
    status, data = request(server, "POST", "/api/state", b"{not json", {"Content-Type": "application/json"})
    assert status == 400


def announce(srv, path, length):
    """Only the headers of a request whose body would be ``length`` bytes: the server must answer
    before reading (and without reading) a body it refuses."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("X-HA-Token", srv.token)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def test_an_oversize_upload_gets_413(server):
    status, body = announce(server, "/upload", server.max_upload_bytes + 1)
    assert status == 413 and str(server.max_upload_bytes).encode() in body
    assert announce(server, "/upload", 10 * 1024**3)[0] == 413  # 10 GB announced, nothing read
    assert announce(server, "/api/state", 2 * 1024 * 1024)[0] == 413
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/upload")
    conn.putheader("X-HA-Token", server.token)
    conn.endheaders()
    assert conn.getresponse().status == 411  # no length: refused too
    conn.close()


def test_actions_answer_as_the_session_does(server, whisper_tiny_en):
    specs = [{"component": "decoder.blocks.3.cross_attn.head.2", "method": "zero"}]
    status, tf = api(server, "teacher_forced", {"interventions": specs})
    assert status == 200 and tf["logprobs_after"] == server.session.teacher_forced(specs)["logprobs_after"]
    status, j = api(server, "transcribe", {"interventions": specs})
    done = wait_job(server, j["job"])
    assert done["state"] == "done" and done["result"]["text"] == server.session.transcribe(specs)["text"]
    assert done["step"] >= len(done["result"]["tokens"])  # progress counted every decoding step
    status, ex = api(server, "export", {"interventions": specs})
    assert "zero_ablate('decoder.blocks.3.cross_attn.head.2')" in ex["code"]


def test_an_uploaded_wav_becomes_the_clip(server, whisper_tiny_en):
    import soundfile as sf

    from hooked_asr.datasets.espeak import synthesize

    wave = synthesize("The sea was calm.")
    buf = io.BytesIO()
    sf.write(buf, (wave * 32767).astype(np.int16), 16000, format="WAV", subtype="PCM_16")
    status, body = request(server, "POST", "/upload?name=calm", buf.getvalue())
    assert status == 200
    j = wait_job(server, json.loads(body)["job"])
    assert j["state"] == "done", j
    buf.seek(0)
    assert (
        j["result"]["name"] == "calm"
        and j["result"]["text"] == whisper_tiny_en.transcribe(sf.read(buf, dtype="float32")[0]).text
    )
    status, page = request(server, "GET", "/")
    assert status == 200 and json.dumps(j["result"]["text"]).encode() in page
    status, body = request(server, "POST", "/upload", b"not audio at all")
    assert status == 400 and b"cannot read the uploaded audio" in body


def test_an_upload_as_the_other_clip_is_the_reference_of_method_other(server):
    """``/upload?as=other`` sets the second clip (the shown clip stays); the 'other' patch then answers as
    the session's own method does; any other role is refused by name."""
    import soundfile as sf

    from hooked_asr.datasets.espeak import synthesize

    before = api(server, "state", {})[1]
    buf = io.BytesIO()
    sf.write(buf, synthesize("Good night and sleep well."), 16000, format="WAV", subtype="FLOAT")
    status, body = request(server, "POST", "/upload?name=night&as=other", buf.getvalue())
    assert status == 200
    j = wait_job(server, json.loads(body)["job"])
    assert j["state"] == "done", j
    assert j["result"]["other"]["name"] == "night" and j["result"]["text"] == before["text"]
    specs = [{"component": "decoder.blocks.1.cross_attn.head.2", "method": "other"}]
    status, tf = api(server, "teacher_forced", {"interventions": specs})
    assert status == 200 and tf["logprobs_after"] == server.session.teacher_forced(specs)["logprobs_after"]
    status, body = request(server, "POST", "/upload?as=code", buf.getvalue())
    assert status == 400 and b"'clip' or the 'other'" in body
