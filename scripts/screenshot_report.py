"""Open an HTML report (``hooked-asr demo``'s ``report.html``, an SAE feature browser, an
explorer view) in headless Chromium, take a full-page screenshot, and check that every figure
rendered.

Checks made by the browser itself rather than by our own HTML writer, through the DevTools
protocol (``e2e/browser.py``, the same driver the explorer's browser test uses):

* each ``<img>``'s decoded size (``naturalWidth x naturalHeight``), so a figure that failed to
  decode shows as ``0x0``;
* no JavaScript error was logged;
* the screenshot is not blank: the share of non-white pixels is printed and must be > 1 %.

Needs Debian's ``chromium`` (``apt-get install chromium``). Writes ``<report>.png`` next to
the report (or ``--out``) and ``<out>_check.json`` with what it saw.

    python scripts/screenshot_report.py hooked_asr_demo/report.html
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import _common

from e2e.browser import Chromium, find_chromium


def check_report(report: Path, out_png: Path, width: int = 1200, height: int = 4000) -> dict:
    """Load ``report``, screenshot at most ``height`` pixels of it, and say what rendered."""
    try:
        find_chromium()
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    with Chromium(width=width, height=900) as browser:
        browser.open(report, settle_ms=500)
        images = [
            tuple(wh)
            for wh in browser.evaluate("Array.from(document.images).map(im => [im.naturalWidth, im.naturalHeight])")
        ]
        title = browser.evaluate("document.title")
        page_h = browser.evaluate("document.documentElement.scrollHeight")
        if page_h > height:
            browser.send(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            browser.screenshot(out_png)
        else:
            browser.screenshot(out_png, full_page=True)
        errors = browser.errors()
    import matplotlib.image as mpimg

    pixels = mpimg.imread(out_png)[..., :3]
    ink = float((pixels.mean(-1) < 0.97).mean())
    rows_with_ink = np.flatnonzero((pixels.mean(-1) < 0.97).any(1))
    return {
        "report": str(report),
        "screenshot": str(out_png),
        "n_images": len(images),
        "images_rendered": sum(w > 0 and h > 0 for w, h in images),
        "image_sizes": [list(i) for i in images],
        "non_white_fraction": ink,
        "content_height_px": int(rows_with_ink[-1] + 1) if rows_with_ink.size else 0,
        "title": title,
        "js_errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("report", type=Path, help="an HTML report, e.g. hooked_asr_demo/report.html")
    ap.add_argument("--out", type=Path, default=None, help="screenshot path (default: <report>.png)")
    ap.add_argument("--height", type=int, default=4000, help="page height to capture, pixels")
    args = ap.parse_args(argv)
    if not args.report.exists():
        raise SystemExit(f"{args.report} does not exist; run `hooked-asr demo` first")
    out = args.out or args.report.with_suffix(".png")
    seen = check_report(args.report, out, height=args.height)
    out.with_name(out.stem + "_check.json").write_text(json.dumps(seen, indent=1))
    print(
        f"screenshot: {out}\nimages: {seen['images_rendered']} of {seen['n_images']} rendered "
        f"{seen['image_sizes']}\nnon-white pixels: {seen['non_white_fraction']:.1%}, content height "
        f"{seen['content_height_px']} px, title {seen['title']!r}"
    )
    ok = seen["images_rendered"] == seen["n_images"] and seen["non_white_fraction"] > 0.01 and not seen["js_errors"]
    if not ok:
        print(
            f"FAILED: a figure did not render, the page is blank, or JavaScript failed {seen['js_errors']}",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
