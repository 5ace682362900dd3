"""Open an HTML report (``hooked-asr demo``'s ``report.html``, an SAE feature browser) in
headless Chromium, take a full-page screenshot, and check that every figure rendered.

Two checks, both from the browser itself rather than from our own HTML writer:

* a copy of the page gets a small script that, once the page has loaded, writes each
  ``<img>``'s decoded size (``naturalWidth x naturalHeight``) into the DOM; Chromium's
  ``--dump-dom`` prints that DOM, so a figure that failed to decode shows as ``0x0``;
* the screenshot is not blank: the share of non-white pixels is printed and must be > 1 %.

Needs Debian's ``chromium`` (``apt-get install chromium``). Writes ``<report>.png`` next to
the report (or ``--out``) and ``<out>_check.json`` with what it saw.

    python scripts/screenshot_report.py hooked_asr_demo/report.html
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROBE = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre');
  out.id = 'hooked-asr-image-check';
  out.textContent = Array.from(document.images).map(
    (im, i) => `img ${i} ${im.naturalWidth}x${im.naturalHeight} complete=${im.complete}`).join('\\n');
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("headless Chromium not found: install it with `apt-get install chromium` (Debian)")


def _run(cmd: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_report(report: Path, out_png: Path, width: int = 1200, height: int = 4000) -> dict:
    chrome = find_chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        dom = _run([chrome, *flags, "--dump-dom", probed.as_uri()]).stdout
        shot = _run([chrome, *flags, f"--window-size={width},{height}", f"--screenshot={out_png}", report.resolve().as_uri()])
    if not out_png.exists():
        raise SystemExit(f"Chromium wrote no screenshot:\n{shot.stderr[-2000:]}")
    images = [(int(w), int(h)) for w, h in re.findall(r"img \d+ (\d+)x(\d+)", dom)]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(out_png)[..., :3]
    ink = float((pixels.mean(-1) < 0.97).mean())
    rows_with_ink = np.flatnonzero((pixels.mean(-1) < 0.97).any(1))
    return {
        "report": str(report), "screenshot": str(out_png), "n_images": len(images),
        "images_rendered": sum(w > 0 and h > 0 for w, h in images), "image_sizes": images,
        "non_white_fraction": ink, "content_height_px": int(rows_with_ink[-1] + 1) if rows_with_ink.size else 0,
        "title": (re.search(r"<title>(.*?)</title>", dom) or [None, ""])[1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="an HTML report, e.g. hooked_asr_demo/report.html")
    ap.add_argument("--out", type=Path, default=None, help="screenshot path (default: <report>.png)")
    ap.add_argument("--height", type=int, default=4000, help="page height to capture, pixels")
    args = ap.parse_args(argv)
    if not args.report.exists():
        raise SystemExit(f"{args.report} does not exist; run `hooked-asr demo` first")
    out = args.out or args.report.with_suffix(".png")
    seen = check_report(args.report, out, height=args.height)
    out.with_name(out.stem + "_check.json").write_text(json.dumps(seen, indent=1))
    print(f"screenshot: {out}\nimages: {seen['images_rendered']} of {seen['n_images']} rendered "
          f"{seen['image_sizes']}\nnon-white pixels: {seen['non_white_fraction']:.1%}, content height "
          f"{seen['content_height_px']} px, title {seen['title']!r}")
    ok = seen["n_images"] > 0 and seen["images_rendered"] == seen["n_images"] and seen["non_white_fraction"] > 0.01
    if not ok:
        print("FAILED: a figure did not render or the page is blank", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
