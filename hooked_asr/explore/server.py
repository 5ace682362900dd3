"""``hooked-asr explore --serve``: the live explorer as a local page, standard library only
(:class:`http.server.ThreadingHTTPServer` and JSON).

Security, in the spirit of Jupyter's server:

* bound to ``127.0.0.1`` unless a ``host`` is given;
* a random token (``secrets.token_urlsafe``) in the printed URL; every request without it
  (query ``?token=`` or header ``X-HA-Token``) gets 403, compared in constant time;
* the ``Host`` header must name the address served (a page on another site cannot reach the
  server through DNS rebinding);
* no file is read by path from a request: the only routes are ``/`` (the page), ``/api/<action>``
  (the documented actions of :meth:`~hooked_asr.explore.live.LiveSession.handle`, JSON in and out) and
  ``/upload`` (audio bytes in the body, at most ``max_upload_bytes``, else 413; ``?as=other``: the second clip of
  the ``other`` method); anything else is 404;
* no code runs from a request beyond those actions (interventions are data, validated field by field).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hooked_asr.explore.live import LiveSession
from hooked_asr.explore.live_audio import LiveError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # ~26 min of 16-bit 16-kHz mono WAV
MAX_JSON_BYTES = 1 * 1024 * 1024
ACTIONS = ("state", "teacher_forced", "transcribe", "job", "export", "window")


class LiveServer:
    """The live page of one :class:`LiveSession` over HTTP. ``start()`` serves in a thread,
    ``serve_forever()`` in this one; ``url`` carries the token."""

    def __init__(
        self,
        session: LiveSession,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ):
        self.session = session
        self.token = token or secrets.token_urlsafe(24)
        self.max_upload_bytes = int(max_upload_bytes)
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        names = (
            {self.host, "localhost", "127.0.0.1", "[::1]"} if self.host in ("127.0.0.1", "localhost", "::1") else None
        )
        if names is None:  # bound to a public address on purpose (--host): any Host header, the token still guards
            return set()
        return {f"{n}:{self.port}" for n in names}

    def start(self) -> "LiveServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="hooked-asr-live-server")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _handler(server: LiveServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hooked-asr-live"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL, not every request
            pass

        # ---- checks ------------------------------------------------------------------------
        def _query(self) -> dict[str, list[str]]:
            return parse_qs(urlsplit(self.path).query)

        def _authorised(self) -> bool:
            given = self.headers.get("X-HA-Token") or (self._query().get("token") or [""])[0]
            return hmac.compare_digest(given.encode(), server.token.encode())

        def _refuse(self) -> bool:
            """Answer 403 (and True) when the token or the Host is wrong."""
            allowed = server.allowed_hosts()
            if allowed and self.headers.get("Host", "") not in allowed:
                self._send_json(HTTPStatus.FORBIDDEN, {"error": "Host not allowed: open the URL the server printed"})
                return True
            if not self._authorised():
                self._send_json(
                    HTTPStatus.FORBIDDEN, {"error": "missing or wrong token: open the URL the server printed"}
                )
                return True
            return False

        # ---- replies -----------------------------------------------------------------------
        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")  # the token stays in this page
            self.end_headers()
            self.wfile.write(body)

        def _send_json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

        def _drain(self, n: int) -> None:
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    break
                n -= len(chunk)

        def _body(self, limit: int) -> bytes | None:
            """The request body, or None after answering 411/413 (the connection then closes)."""
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "send Content-Length"})
                return None
            n = int(length)
            if n > limit:
                self.close_connection = True  # do not read a body we refuse
                self._send_json(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {"error": f"the body has {n} bytes; the limit is {limit} (--max-upload-mb)"},
                )
                return None
            return self.rfile.read(n)

        # ---- routes --------------------------------------------------------------------------
        def do_GET(self) -> None:
            if self._refuse():
                return
            route = urlsplit(self.path).path
            if route == "/":
                cfg = {"transport": "http", "max_upload_bytes": server.max_upload_bytes}
                self._send(HTTPStatus.OK, server.session.page(cfg).encode("utf-8"), "text/html; charset=utf-8")
            else:
                self._send_json(
                    HTTPStatus.NOT_FOUND, {"error": f"no such page {route!r}: the server serves /, /api/* and /upload"}
                )

        def do_POST(self) -> None:
            if self._refuse():
                return
            route = urlsplit(self.path).path
            if route == "/upload":
                data = self._body(server.max_upload_bytes)
                if data is None:
                    return
                q = self._query()
                try:
                    start = float((q.get("start") or ["0"])[0])
                    window = float(q["window"][0]) if q.get("window") and q["window"][0] else None
                    name = (q.get("name") or ["upload"])[0][:80]
                    role = (q.get("as") or ["clip"])[0]
                    job = server.session.start_upload(data, start, window, name, role)
                    self._send_json(HTTPStatus.OK, {"job": job})
                except (LiveError, ValueError) as e:
                    self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                return
            action = route[len("/api/") :] if route.startswith("/api/") else None
            if action not in ACTIONS:
                self._send_json(
                    HTTPStatus.NOT_FOUND, {"error": f"no such action {route!r}: /api/ one of {list(ACTIONS)}"}
                )
                return
            raw = self._body(MAX_JSON_BYTES)
            if raw is None:
                return
            try:
                body = json.loads(raw or b"{}")
                self._send_json(HTTPStatus.OK, server.session.handle(action, body))
            except (LiveError, ValueError) as e:  # json errors are ValueErrors too
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            except Exception as e:  # a model error: say it, keep serving
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})

    return Handler


__all__ = ["LiveServer", "MAX_UPLOAD_BYTES"]
