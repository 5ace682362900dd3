"""The explorer page's embedded data cannot end or swallow the rest of the document (issue 28,
item 8), and saving a page is atomic (item 13). The page is parsed with html5lib, an
implementation of the WHATWG tokenizer browsers use (script-data escaped and double-escaped
states included): ``<!--<script`` inside a ``<script>`` element makes a later ``</script>``
not end it, so the explorer's own script would be read as data and never run."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from hooked_asr.explore.view import ExplorerView

html5lib = pytest.importorskip("html5lib")

PAYLOADS = [
    "<!--<script",
    "</script><script>alert(1)</script>",
    "-->",
    "<!--",
    "&amp; &lt;",
    "a\u2028b\u2029c",
    "<SCRIPT>",
    "</ScRiPt >",
    "<\\/script>",
    "\"'`",
]


def _view(text: str) -> ExplorerView:
    data = {
        "version": 1,
        "title": f"title {text}",
        "model": {"name": f"m {text}"},
        "audio": {"duration": 1.0},
        "transcript": {"text": f"said {text} end", "tokens": [text, "<|endoftext|>"], "words": [{"word": text}]},
    }
    return ExplorerView(data, wav_base64="UklGRg==")


@pytest.mark.parametrize("text", PAYLOADS)
def test_embedded_data_parses_back_exactly_and_the_page_script_survives(text):
    view = _view(text)
    doc = html5lib.parse(view.to_html(), namespaceHTMLElements=False)
    scripts = doc.findall(".//script")
    assert [s.get("id") for s in scripts] == ["ha-data", None], "the data block swallowed or split the page"
    assert json.loads(scripts[0].text) == view.data
    js = resources.files("hooked_asr.explore").joinpath("static", "explorer.js").read_text(encoding="utf-8")
    assert scripts[1].text == js
    assert doc.find(".//title").text == f"hooked_asr explorer: title {text}"


def test_data_block_holds_no_markup_characters():
    block = _view("<!--<script>&\u2028\u2029").to_html().split('id="ha-data">', 1)[1].split("</script>", 1)[0]
    assert not set(block) & set("<>&\u2028\u2029")


def test_a_failed_save_keeps_the_previous_page(tmp_path):
    """Writing fails part way (here: text that cannot be encoded; on a full disk: ENOSPC): the
    page saved before stays whole."""
    page = _view("first").save(tmp_path / "explorer.html")
    before = page.read_bytes()
    bad = _view("x")
    bad.data["title"] = "\ud800"  # a lone surrogate: UTF-8 cannot encode it
    with pytest.raises(UnicodeEncodeError):
        bad.save(page)
    assert page.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["explorer.html"]
