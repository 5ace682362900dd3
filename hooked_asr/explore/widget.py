"""The live explorer as a Jupyter widget (anywidget: JupyterLab, Notebook 7, VS Code), on the same
Python backend as ``hooked-asr explore --serve`` (:meth:`~hooked_asr.explore.live.LiveSession.handle`).

The widget shows the live page in an ``<iframe srcdoc>`` (so several views never share script state or
style); the page's actions travel ``iframe --postMessage--> widget --comm--> Python`` and back. No port is
opened: the kernel's own channel carries everything.

    >>> from hooked_asr.explore.widget import live_widget
    >>> w = live_widget(model, "clip.wav")
    >>> w                      # click a head, "ablate the selected head": transcript, diff, log-probs
    >>> w.session.transcribe([{"component": "decoder.blocks.3.cross_attn.head.2", "method": "zero"}])["text"]

Needs ``anywidget`` (``pip install hooked_asr[live]``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hooked_asr.explore.live import LiveSession

# The host side of the bridge: forward the page's requests to Python and the replies back.
ESM = r"""
function render({ model, el }) {
  const frame = document.createElement("iframe");
  frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
  frame.style.width = "100%";
  frame.style.border = "1px solid #ddd";
  const size = () => { frame.style.height = model.get("height") + "px"; };
  const load = () => { frame.srcdoc = model.get("page"); };
  size(); load();
  model.on("change:page", load);
  model.on("change:height", size);
  const onMessage = (ev) => {
    if (ev.source !== frame.contentWindow || !ev.data) return;
    if (ev.data.ha_live !== undefined) model.send({ id: ev.data.ha_live, action: ev.data.action, body: ev.data.body });
    else if (ev.data.ha_live_reload) model.send({ reload: true });
  };
  window.addEventListener("message", onMessage);
  model.on("msg:custom", (msg) => {
    if (msg.id !== undefined && frame.contentWindow)
      frame.contentWindow.postMessage({ ha_live_reply: msg.id, result: msg.result, error: msg.error }, "*");
  });
  el.appendChild(frame);
  return () => window.removeEventListener("message", onMessage);
}
export default { render };
"""


@cache
def _widget_class() -> type:
    try:
        import anywidget
        import traitlets
    except ImportError as e:  # the one optional dependency of the widget
        raise ImportError("the live widget needs anywidget: pip install anywidget (or hooked_asr[live])") from e

    class LiveWidget(anywidget.AnyWidget):
        """The live explorer of ``session`` (a :class:`LiveSession`) in a notebook."""

        _esm = ESM
        page = traitlets.Unicode("").tag(sync=True)
        height = traitlets.Int(1500).tag(sync=True)

        def __init__(self, session: LiveSession, height: int = 1500, **kwargs: Any):
            super().__init__(height=height, **kwargs)
            self.session = session
            self.refresh()
            self.on_msg(self._on_message)

        def refresh(self) -> None:
            """Redraw the page from the session (after new audio or a new window)."""
            self.page = self.session.page({"transport": "widget"})

        def _on_message(self, _: Any, content: dict[str, Any], buffers: list[Any]) -> None:
            if content.get("reload"):
                self.refresh()
                return
            self.send(self.answer(content))

        def answer(self, content: dict[str, Any]) -> dict[str, Any]:
            """The reply to one page request ``{id, action, body}``: ``{id, result}`` or ``{id, error}``."""
            try:
                return {
                    "id": content.get("id"),
                    "result": self.session.handle(str(content.get("action")), content.get("body") or {}),
                }
            except Exception as e:  # shown in the page's status line
                return {
                    "id": content.get("id"),
                    "error": f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e),
                }

    return LiveWidget


def live_widget(model: Any, audio: Any, *, height: int = 1500, **session_kwargs: Any) -> Any:
    """A :class:`LiveWidget` on a new :class:`~hooked_asr.explore.live.LiveSession` of ``audio``
    (``session_kwargs``: ``start``, ``window``, ``language``, ``name``, ...)."""
    return _widget_class()(LiveSession(model, audio, **session_kwargs), height=height)


def __getattr__(name: str) -> Any:
    if name == "LiveWidget":
        return _widget_class()
    raise AttributeError(name)


__all__ = ["ESM", "live_widget"]
