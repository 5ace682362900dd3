"""The explorer page: one HTML file holding the data (JSON), the audio (WAV, base64) and the
hand-written script and style shipped in ``hooked_asr/explore/static`` (no CDN, no network,
no server). In Jupyter the page sits in an ``<iframe srcdoc>`` so several views on one
notebook never share script state or style."""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from hooked_asr.files import atomic_write_text

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style></head>
<body>
<div id="ha-root" class="ha-root" data-selected-token="" data-selected-head="">
<noscript>The explorer needs JavaScript (it runs offline, from this file).</noscript>
</div>
<audio id="ha-audio" preload="auto" src="data:audio/wav;base64,{wav}"></audio>
<script type="application/json" id="ha-data">{data}</script>
<script>{js}</script>
</body></html>
"""


def static_text(name: str) -> str:
    return resources.files("hooked_asr.explore").joinpath("static", name).read_text(encoding="utf-8")


# Characters JSON may hold that HTML or old JavaScript parsers read: "<" starts "</script" and
# "<!--" (which makes a later "</script>" no longer end the element, so the page's own script
# becomes data), ">" ends "-->", "&" starts entities in XHTML, U+2028/2029 end lines in pre-ES2019
# JavaScript. Each is written as its \u escape, which JSON.parse reads back as the same character.
_SCRIPT_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def json_for_script(data: Any) -> str:
    """``data`` as JSON that is inert inside ``<script type="application/json">`` (no markup characters)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).translate(_SCRIPT_ESCAPES)


class ExplorerView:
    """A self-contained interactive view. ``display(view)`` in Jupyter, ``view.save("x.html")``
    for a browser; ``view.data`` is everything it shows (JSON-ready)."""

    def __init__(self, data: dict[str, Any], wav_base64: str):
        self.data = data
        self.wav_base64 = wav_base64

    def to_html(self) -> str:
        """The whole page as a string."""
        title = f"hooked_asr explorer: {self.data.get('title') or self.data['model']['name']}"
        return _TEMPLATE.format(
            title=html.escape(title),
            css=static_text("explorer.css"),
            js=static_text("explorer.js"),
            wav=self.wav_base64,
            data=json_for_script(self.data),
        )

    def save(self, path: str | Path) -> Path:
        """Write the page atomically; returns the path."""
        return atomic_write_text(path, self.to_html())  # a failed write keeps the previous page

    @property
    def size_bytes(self) -> int:
        """Size of the saved page."""
        return len(self.to_html().encode("utf-8"))

    def _repr_html_(self) -> str:
        page = html.escape(self.to_html(), quote=True)
        return (
            f'<iframe srcdoc="{page}" style="width:100%;height:1100px;border:1px solid #ddd" '
            'sandbox="allow-scripts allow-same-origin"></iframe>'
        )

    def __repr__(self) -> str:
        t = self.data["transcript"]
        return (
            f"ExplorerView({self.data['model']['name']}, {self.data['audio']['duration']:.1f} s, "
            f"{len(t['tokens'])} tokens, {self.size_bytes / 1e6:.2f} MB: {t['text']!r})"
        )


__all__ = ["ExplorerView", "json_for_script", "static_text"]
