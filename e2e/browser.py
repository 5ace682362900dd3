"""Headless Chromium driven through the DevTools protocol over a pipe, for tests and scripts
that must see a page the way a browser does (scripts run, audio decodes, figures render).
Test tooling, not part of the package: ``from e2e.browser import Chromium`` (scripts put the
repository root on ``sys.path`` first).

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and
write replies and events to descriptor 4, each message JSON ending in a NUL byte, so no
websocket library and no open port are needed::

    with Chromium(width=1200, height=900) as browser:
        browser.open(path)
        browser.evaluate("document.title")
        browser.click("#play")
        browser.screenshot("page.png")
        assert not browser.errors()

Needs Debian's ``chromium`` (``apt-get install chromium``); :func:`find_chromium` names the fix
when it is missing.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Flags that keep a headless run offline, quiet and reproducible on a shared machine.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-file-access-from-files",
]


def find_chromium() -> str:
    """Path of a Chromium executable; raises ``FileNotFoundError`` saying how to install one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("headless Chromium not found: install it with `apt-get install chromium` (Debian)")


class BrowserError(RuntimeError):
    """A DevTools command failed, timed out, or Chromium exited."""


class Chromium:
    """One headless Chromium with one page. Use as a context manager (the process and its
    profile folder are always removed). ``events`` keeps every protocol event received."""

    def __init__(self, width: int = 1200, height: int = 900, executable: str | None = None, timeout: float = 60.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.executable = executable or find_chromium()
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._proc: subprocess.Popen | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self.session: str | None = None

    # ---- process -----------------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="hooked-asr-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes replies
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)  # off 3/4 first, in case they sit there
            os.dup2(r, 3)
            os.dup2(w, 4)

        self._proc = subprocess.Popen(
            [
                self.executable,
                *FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Python's own descriptors are close-on-exec; only the two dup2'd into 3 and 4 survive exec.
            preexec_fn=wire,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            target = self.send("Target.createTarget", url="about:blank", session=False)["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True, session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            try:
                self.send("Browser.close", session=False, timeout=5)
            except Exception:
                pass  # already gone, or wedged: terminate below
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        for fd in ("_to_chrome", "_from_chrome"):
            if hasattr(self, fd):
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                delattr(self, fd)
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    # ---- protocol ------------------------------------------------------------------------
    def send(self, method: str, *, session: bool = True, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply's ``result`` (events arriving meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session and self.session is not None:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline, f"reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium sent no {what} in time")
            ready, _, _ = select.select([self._from_chrome], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe while we waited for a {what}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The next event named ``method`` (one already received counts)."""
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and not ev.get("_seen"):
                ev["_seen"] = True
                return ev
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            ev = self._read(deadline, f"{method} event")
            if "method" in ev:
                self.events.append(ev)
                if ev["method"] == method:
                    ev["_seen"] = True
                    return ev

    # ---- page --------------------------------------------------------------------------
    def open(self, path_or_url: str | Path, settle_ms: int = 300) -> None:
        """Load a file or URL and wait for its ``load`` event, then ``settle_ms`` more."""
        url = (
            path_or_url
            if isinstance(path_or_url, str) and "://" in path_or_url
            else Path(path_or_url).resolve().as_uri()
        )
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")
        time.sleep(settle_ms / 1000)

    def evaluate(self, expression: str, await_promise: bool = True) -> Any:
        """Value of a JavaScript expression in the page (a thrown error becomes BrowserError)."""
        out = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in out:
            details = out["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error evaluating {expression[:80]!r}: {text}")
        return out.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first element matching ``selector``."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; })()"
        )
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        if box[2] <= 0 or box[3] <= 0:
            raise BrowserError(f"{selector!r} is not visible (size {box[2]}x{box[3]})")
        self.click_at(box[0], box[1])

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def press(self, key: str) -> None:
        """A real key press (down and up) of a named key: ``ArrowRight``, ``ArrowLeft``, ``Enter``, `` ``."""
        codes = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Enter": 13, " ": 32, "Escape": 27}
        if key not in codes:
            raise ValueError(f"unknown key {key!r}; known: {sorted(codes)}")
        code = "Space" if key == " " else key
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=codes[key])

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """PNG of the viewport (or the whole page with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """JavaScript errors so far: uncaught exceptions, ``console.error`` calls, error log entries."""
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out


__all__ = ["BrowserError", "Chromium", "FLAGS", "find_chromium"]
