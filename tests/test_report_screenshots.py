"""benchmarks/report_screenshots.py: Snakemake's HTML report rendered in headless Chromium."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from report_screenshots import find_chromium, report_results, report_screenshots  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# A one-rule workflow whose results are registered as the report rule registers them: a
# table as an HTML page written by esol.report_html, a label-map figure by esol.viz.
SNAKEFILE = textwrap.dedent('''
    rule table:
        output:
            html=report("table.html", caption="caption.rst", category="Tables"),
            png=report("grid.png", caption="caption.rst", category="Figures"),
        run:
            import numpy as np
            from esol.report_html import write_html
            from esol.viz import image_grid

            write_html(output.html, "## Table 9\\n\\n| Method | mIoU |\\n|---|---|\\n| `cam` | 31.8 |\\n")
            label = np.array([[0, 1], [3, 255]], dtype=np.uint8)
            image_grid(output.png, [[label]], ["ground truth"], classes=["red", "lime", "cyan"])
''')


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_report_results_render_in_headless_chromium(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "caption.rst").write_text("A caption.\n")
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "HOME": str(tmp_path)}
    for extra in ([ "--cores", "1"], ["--report", "report.html"]):
        run = subprocess.run([SNAKEMAKE, "-d", str(tmp_path), "-s", str(tmp_path / "Snakefile"), *extra],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert sorted(Path(p).name for p in report_results(html)) == ["grid.png", "table.html"]
    shots = report_screenshots(tmp_path / "report.html", tmp_path / "shots")
    assert [s.name for s in shots] == ["00_start.png", "01_table.html.png", "02_grid.png.png"] or \
        [s.name for s in shots] == ["00_start.png", "01_grid.png.png", "02_table.html.png"]
    from PIL import Image

    pixels = {s.name: np.asarray(Image.open(s).convert("RGB")) for s in shots}
    start = pixels.pop("00_start.png")
    for name, img in pixels.items():
        assert img.shape == start.shape and not np.array_equal(img, start), name  # the result is shown
