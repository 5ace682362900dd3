"""The live explorer's long work: jobs that run in a thread and report progress to the page
(:meth:`hooked_asr.explore.live.LiveSession.job`), and the partial transcript a re-transcription streams.

``model.generate`` has no streamer: :class:`TokenStream` reads the decoding from a hook instead. With the
key/value cache every decoder call after the first feeds exactly the token the previous step chose, so
``decoder.hook_embed`` at step ``k`` (``model.decoding_state.step``) carries ``W_E[token_{k-1}]``; the row of
``W_E`` it equals is that token. Decoding itself is untouched."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import torch

from hooked_asr.explore.live_audio import LiveError

MAX_FINISHED_JOBS = 32


class JobRunner:
    """Jobs by id: ``start(kind, fn)`` runs ``fn(report)`` in a thread; ``report(message, step=None, **extra)``
    updates what :meth:`get` shows (``state``: running / done / error, ``message``, ``step``, ``result``, extras)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def start(self, kind: str, fn: Callable[[Callable[..., None]], Any]) -> str:
        jid = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {"id": jid, "kind": kind, "state": "running", "message": "queued", "step": 0}
        finished = [k for k, j in self.jobs.items() if j["state"] != "running"]
        for k in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:  # a long session keeps the newest results only
            self.jobs.pop(k, None)
        self.jobs[jid] = job

        def report(message: str, step: int | None = None, **extra: Any) -> None:
            job["message"] = message
            if step is not None:
                job["step"] = step
            job.update(extra)

        def run() -> None:
            try:
                job["result"] = fn(report)
                job["state"] = "done"
            except Exception as e:  # shown in the page; the server keeps serving
                job["state"], job["error"] = "error", f"{type(e).__name__}: {e}"

        threading.Thread(target=run, daemon=True, name=f"hooked-asr-live-{kind}").start()
        return jid

    def get(self, jid: Any) -> dict[str, Any]:
        if not isinstance(jid, str) or jid not in self.jobs:
            raise LiveError(f"no job {jid!r}")
        return dict(self.jobs[jid])


class TokenStream:
    """The tokens greedy decoding has chosen so far, for one row; ``on_tokens(ids)`` after each decoder call
    that adds one. A call at step 0 (a new window, or a temperature fallback's retry) starts over."""

    def __init__(self, model: Any, on_tokens: Callable[[list[int]], None]):
        self.model, self.on_tokens, self.tokens = model, on_tokens, []
        w = model.W_E.detach()
        # one projection finds the candidate row, an exact comparison confirms it
        self._probe = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(0)).to(w.device, w.dtype)
        self._keys = w @ self._probe

    def token_of(self, x: torch.Tensor) -> int | None:
        """The vocabulary row ``x`` ``[d_model]`` equals, or None."""
        w = self.model.W_E
        i = int(torch.argmin((self._keys - x @ self._probe).abs()))
        return i if torch.equal(w[i], x.to(w.dtype)) else None

    def hook(self, x: torch.Tensor, hook: Any) -> None:
        state = self.model.decoding_state
        if state is None or x.shape[0] != 1:
            return
        if state.step == 0:
            self.tokens = []
            return
        if x.shape[1] == 1:
            t = self.token_of(x[0, 0])
            if t is not None:
                self.tokens.append(t)
                self.on_tokens(list(self.tokens))


__all__ = ["JobRunner", "MAX_FINISHED_JOBS", "TokenStream"]
