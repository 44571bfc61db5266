"""Screenshots of Snakemake's HTML report in headless Chromium, one PNG per result.

Not a test: it renders a report so that it can be looked at without a browser (docs/report.md,
"Screenshots"). With Chromium installed (``apt-get install -y chromium`` on Debian):

    snakemake --cores 2 --directory .test
    snakemake --directory .test --report report.html
    python benchmarks/report_screenshots.py .test/report.html --out screenshots/

writes ``screenshots/00_start.png`` (the start page) and one ``NN_<result>.png`` per
registered result (``table3.html``, ``fig4_segmentation.png``, each training stage, ...),
each as a click on the result's eye icon would show it, and prints their paths.

The report is a single-page app: a result is shown by a click. Headless Chromium's
``--screenshot`` runs no clicks, so a copy of the report gets a small script that reads
the result's path from the URL's fragment (``report.html#<path>``) and calls the app's
own ``setView`` with that result, as the result's button does
(snakemake/report/html_reporter/template/components/result_view_button.js).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

SHOW_RESULT = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var path = decodeURIComponent(location.hash.slice(1));
    if (!path || !(path in results)) { return; }
    var cat, sub;
    for (var c in categories) {
      for (var s in categories[c]) {
        if (JSON.stringify(categories[c][s]).indexOf(JSON.stringify(path)) >= 0) { cat = c; sub = s; }
      }
    }
    var mime = results[path].mime_type;
    var content = mime === "text/html" ? "html" : (mime.indexOf("image/") === 0 ? "img" : "text");
    app.setView({navbarMode: cat ? "subcategory" : "menu", category: cat, subcategory: sub,
                 content: content, contentPath: results[path].data_uri, resultPath: path});
  }, 500);
});
</script>
"""


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def report_results(html: str) -> list[str]:
    """The registered results' paths, in the report's order (``var results = {...};``)."""
    m = re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)
    if m is None:
        raise ValueError("not a Snakemake HTML report: no 'var results = {...}' found")
    return list(json.loads(m.group(1)))


def screenshot(chromium: str, url: str, out: Path, size: tuple[int, int] = (1500, 1000),
               budget_ms: int = 15000, timeout: float = 300) -> Path:
    """One headless screenshot of ``url``; ``budget_ms`` of virtual time lets the app render."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}",
           f"--screenshot={out}", url]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{chromium} failed on {url}: {run.stderr[-2000:]}")
    return out


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.split("/report/")[-1])


def report_screenshots(report: str | Path, out: str | Path, chromium: str | None = None,
                       only: list[str] | None = None) -> list[Path]:
    """Screenshots of the start page and of each result (``only``: results whose path
    ends with one of these names) of the Snakemake report ``report`` into ``out``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}); "
                           "on Debian: apt-get install -y chromium")
    html = Path(report).read_text(encoding="utf-8")
    paths = report_results(html)
    if only:
        paths = [p for p in paths if any(p.endswith(name) for name in only)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        # the last </body>: the embedded libraries hold the string too
        head, tag, tail = html.rpartition("</body>")
        if not tag:
            raise ValueError(f"{report}: no </body> tag")
        page.write_text(head + SHOW_RESULT + tag + tail, encoding="utf-8")
        url = page.resolve().as_uri()
        shots.append(screenshot(chromium, url, out / "00_start.png"))
        for i, path in enumerate(paths, 1):
            shots.append(screenshot(chromium, f"{url}#{quote(path)}", out / f"{i:02d}_{_slug(path)}.png"))
    return shots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="the HTML report written by snakemake --report")
    ap.add_argument("--out", default="screenshots", help="folder for the PNG files")
    ap.add_argument("--chromium", help="browser binary (default: the first of "
                    f"{', '.join(CHROMIUM_NAMES)} on PATH)")
    ap.add_argument("--only", nargs="*", help="results whose path ends with one of these names")
    args = ap.parse_args()
    for shot in report_screenshots(args.report, args.out, args.chromium, args.only):
        print(shot)


if __name__ == "__main__":
    main()
