"""The explorer in headless Chromium (Debian's ``chromium``; CI installs it): clicking a token and a
head changes the selected-token state and the attention panel, the audio decodes, no JavaScript
error is logged. Screenshots go to the test's tmp folder, and to ``$HOOKED_ASR_ARTIFACTS`` when set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]

ROOT_STATE = "JSON.stringify(document.getElementById('ha-root').dataset)"
STRIP = "document.querySelector('#ha-strip-label').nextElementSibling.toDataURL()"


def _keep(png: Path) -> None:
    out = os.environ.get("HOOKED_ASR_ARTIFACTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(out) / png.name)


def test_clicking_a_token_and_a_head_changes_the_attention_panel(thirty_second_view, tmp_path):
    from e2e.browser import Chromium

    page = thirty_second_view.save(tmp_path / "explorer.html")
    n_tokens = len(thirty_second_view.data["transcript"]["tokens"])
    with Chromium(width=1280, height=1000) as b:
        b.open(page)
        assert b.evaluate("document.querySelectorAll('.ha-token').length") == n_tokens
        before = (
            b.evaluate(ROOT_STATE),
            b.evaluate(STRIP),
            b.evaluate("document.getElementById('ha-lens-title').textContent"),
        )
        assert '"selectedToken":"0"' in before[0] and '"selectedHead":"mean"' in before[0]
        b.click('.ha-token[data-i="12"]')
        after_token = (
            b.evaluate(ROOT_STATE),
            b.evaluate(STRIP),
            b.evaluate("document.getElementById('ha-lens-title').textContent"),
        )
        assert '"selectedToken":"12"' in after_token[0]
        assert after_token[1] != before[1] and after_token[2] != before[2]  # attention strip and lens redrawn
        assert b.evaluate("document.querySelector('.ha-token.ha-sel').dataset.i") == "12"
        b.click('.ha-head[data-layer="2"][data-head="3"]')
        after_head = b.evaluate(ROOT_STATE), b.evaluate(STRIP)
        assert '"selectedHead":"2.3"' in after_head[0] and '"selectedToken":"12"' in after_head[0]
        assert after_head[1] != after_token[1]
        assert "L2 H3" in b.evaluate("document.getElementById('ha-strip-label').textContent")
        b.press("ArrowRight")  # the keyboard steps to the next token
        assert '"selectedToken":"13"' in b.evaluate(ROOT_STATE)
        # The audio element's source decodes, and to the clip's length.
        decoded = b.evaluate("""(async () => {
            const a = document.getElementById('ha-audio');
            const buf = await (await fetch(a.src)).arrayBuffer();
            const pcm = await new OfflineAudioContext(1, 16000, 16000).decodeAudioData(buf);
            if (a.readyState < 1) await new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = bad; });
            return [pcm.duration, a.duration, a.error === null];
        })()""")
        assert (
            decoded[0] == pytest.approx(30.0, abs=0.01) and decoded[1] == pytest.approx(30.0, abs=0.05) and decoded[2]
        )
        shot = b.screenshot(tmp_path / "explorer.png")
        assert not b.errors(), b.errors()
    assert shot.stat().st_size > 20_000
    _keep(shot)


def test_optional_panels_respond_to_clicks(panels_view, tmp_path):
    from e2e.browser import Chromium

    view, _, _, texts = panels_view
    page = view.save(tmp_path / "panels.html")
    comp = "decoder.blocks.3.cross_attn.head.2"
    with Chromium(width=1280, height=1000) as b:
        b.open(page)
        b.click(f'.ha-heat td[data-component="{comp}"]')
        assert b.evaluate("document.getElementById('ha-patched-text').textContent") == texts[comp]
        first = b.evaluate("document.getElementById('ha-sae-info').textContent")
        b.click('.ha-sae-btn[data-i="2"]')
        assert b.evaluate("document.getElementById('ha-sae-info').textContent") != first
        assert "feature 2" in b.evaluate("document.getElementById('ha-sae-label').textContent")
        assert (
            b.evaluate("document.querySelectorAll('#ha-probe tr').length") == 1 + view.data["model"]["encoder_layers"]
        )
        b.click('.ha-word[data-w="3"]')  # a word: selects its first token and plays its span
        w = view.data["transcript"]["words"][3]
        assert b.evaluate("document.getElementById('ha-root').dataset.selectedToken") == str(w["tokens"][0])
        shot = b.screenshot(tmp_path / "panels.png", full_page=True)
        assert not b.errors(), b.errors()
        # Jupyter's display(view): two views on one page, each in its own iframe, both alive
        both = tmp_path / "notebook.html"
        both.write_text(f"<!doctype html><html><body>{view._repr_html_()}{view._repr_html_()}</body></html>")
        b.open(both, settle_ms=800)
        counts = b.evaluate(
            "Array.from(document.querySelectorAll('iframe')).map("
            "f => f.contentDocument.querySelectorAll('.ha-token').length)"
        )
        assert counts == [len(view.data["transcript"]["tokens"])] * 2
        assert not b.errors(), b.errors()
    _keep(shot)
