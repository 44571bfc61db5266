"""Figures (legends, styles, order), training curves, the HTML table pages, console progress."""

import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from conftest import REPO
from esol import viz
from esol.metrics import SweepRow
from esol.progress import LineStream, StageProgress, format_duration, progress_line, stage_name
from esol.report_html import markdown_to_html, section, write_html
from esol.run_report import history_stage

CLASSES = ["red", "lime", "cyan", "violet"]  # the embedded synthetic classes


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


# -- label maps ----------------------------------------------------------------------

def test_label_grid_has_a_legend_of_the_classes_present_in_their_palette_colours(tmp_path):
    gt = np.array([[0, 0, 3, 3], [0, 1, 3, 255]], dtype=np.uint8)
    pred = np.array([[0, 0, 3, 3], [0, 0, 3, 3]], dtype=np.uint8)
    rgb = np.zeros((2, 4, 3), np.uint8)
    fig = viz.image_grid(tmp_path / "g.png", [[rgb, gt, pred]], ["image", "ground truth", "pred"],
                         classes=CLASSES)
    assert _legend_texts(fig) == ["background", "red", "cyan", "ignore (255)"]
    colours = {p.get_label(): tuple(np.round(np.array(p.get_facecolor()[:3]) * 255).astype(int))
               for p in fig.legends[0].get_patches()}
    # "cyan" is label 3, which the VOC palette draws olive; the legend shows that colour.
    assert colours["cyan"] == (128, 128, 0) and colours["red"] == (128, 0, 0)
    assert colours["ignore (255)"] == (255, 255, 255)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_rgb_only_grid_has_no_class_legend_and_notes_go_under_panels(tmp_path):
    rgb = np.zeros((2, 4, 3), np.uint8)
    fig = viz.image_grid(tmp_path / "g.png", [[rgb, rgb]], ["a", "b"], classes=CLASSES,
                         notes=[[None, "mIoU 58"]])
    assert fig.legends == []
    assert [ax.get_xlabel() for ax in fig.axes] == ["", "mIoU 58"]


def test_heat_grid_has_a_colourbar_from_0_to_1(tmp_path):
    rgb = np.zeros((2, 4, 3), np.uint8)
    fig = viz.image_grid(tmp_path / "g.png", [[rgb, viz.overlay(rgb, np.ones((2, 4)))]], ["image", "cam"],
                         notes=[[None, "CAM: cyan"]], colorbar="CAM score")
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "CAM score" and bar.get_ylim() == (0.0, 1.0)
    assert fig.axes[1].get_xlabel() == "CAM: cyan"


def test_image_miou_by_hand():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    # background: 1 / 2; class 1: 2 / 3
    assert viz.image_miou(pred, gt) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # 255 in the ground truth is ignored; a class only in the prediction counts as IoU 0
    assert viz.image_miou(np.array([[2, 1]]), np.array([[255, 1]])) == pytest.approx(1.0)
    assert viz.image_miou(np.array([[2, 1]]), np.array([[1, 1]])) == pytest.approx(0.25)


# -- curves --------------------------------------------------------------------------

def _boxes_overlap(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_sweep_legend_does_not_cover_the_axes(tmp_path):
    rows = [SweepRow(t, 0.3 + 0.4 * t, 0.5, 0.9 - 0.5 * t, 0.8) for t in np.linspace(0.05, 0.95, 19)]
    fig = viz.plot_sweep(tmp_path / "s.png", rows, "cam seeds on train")
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()  # the closed figure's canvas has none
    assert not _boxes_overlap(ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer))
    assert ax.get_xlabel() and ax.get_ylabel()


def test_threshold_curves_differ_in_style_and_have_labelled_axes(tmp_path):
    t = np.linspace(0.05, 0.95, 19)
    same = {"miou": 0.5 * np.ones_like(t), "precision": t, "recall": 1 - t, "threshold": t}
    sweeps = {m: same for m in ("cam", "expansion", "esol")}  # identical curves overlap
    fig = viz.threshold_figure(tmp_path / "t.png", sweeps, {m: 0.5 for m in sweeps}, "train")
    for ax in fig.axes:
        assert ax.get_xlabel() == "background threshold" and ax.get_ylabel()
        styles = [(ln.get_linestyle(), ln.get_marker()) for ln in ax.get_lines() if len(ln.get_xdata()) > 1]
        assert len(set(styles)) == 3
    assert _legend_texts(fig) == ["cam", "expansion", "esol"]


def test_recall_curves_differ_in_style(tmp_path):
    t = np.linspace(0, 1, 11)
    fig = viz.plot_curves(tmp_path / "r.png", {"a": (t, t), "b": (t, t)}, "threshold", "recall", "x",
                          marker_x=0.3)
    lines = fig.axes[0].get_lines()[:2]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert lines[0].get_marker() != lines[1].get_marker()


def test_times_figure_lists_rules_in_pipeline_order_top_first(tmp_path):
    order = ["prepare_data", "train_classifier", "make_cam", "eval_seed", "report"]
    per_rule = {"eval_seed": 60.0, "make_cam": 120.0, "zzz_unknown": 1.0, "prepare_data": 6.0}
    assert viz.pipeline_order(per_rule, order) == ["prepare_data", "make_cam", "eval_seed", "zzz_unknown"]
    fig = viz.times_figure(tmp_path / "times.png", per_rule, order)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # barh draws the first label at the bottom: the top bar is the last label.
    assert labels[::-1] == ["prepare_data", "make_cam", "eval_seed", "zzz_unknown"]
    widths = {lab: p.get_width() for lab, p in zip(labels, ax.patches, strict=True)}
    assert widths["make_cam"] == pytest.approx(2.0)  # minutes


def test_pipeline_rules_are_a_topological_order_of_the_rule_graph():
    """PIPELINE_RULES (workflow/rules/common.smk) against the DAG of the test config."""
    snakemake = str(Path(sys.executable).parent / "snakemake")
    run = subprocess.run([snakemake, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(REPO / ".test"),
                          "--rulegraph", "--nolock", "-F"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", run.stdout, re.M))
    edges = [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", run.stdout, re.M)]
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = text.split("PIPELINE_RULES = [")[1].split("]")[0]
    order = re.findall(r'"(\w+)"', block)
    missing = set(names.values()) - set(order) - {"all"}
    assert not missing, f"rules missing from PIPELINE_RULES: {missing}"
    rank = {r: i for i, r in enumerate(order)}
    late = [(a, b) for a, b in edges if b != "all" and rank[a] > rank[b]]
    assert not late, f"PIPELINE_RULES puts these after the rule that needs them: {late}"


# -- training curves -----------------------------------------------------------------

def test_history_plot_from_a_hand_made_csv(tmp_path):
    csv = tmp_path / "classifier_history.csv"
    csv.write_text("epoch,step,lr,loss,label_accuracy,offset_mean\n"
                   "1,6,0.04,0.75,0.60,0.1\n2,12,0.03,0.25,0.94,0.2\n3,18,0.02,0.14,0.98,0.3\n")
    history = viz.read_history(csv)
    assert viz.history_panels(history) == {"loss": ["loss"], "accuracy": ["label_accuracy"],
                                           "learning rate": ["lr"], "other": ["offset_mean"]}
    fig = viz.plot_history(tmp_path / "c.png", history, history_stage(csv))
    assert [ax.get_title() for ax in fig.axes] == ["classifier: loss", "classifier: accuracy",
                                                   "classifier: learning rate", "classifier: other"]
    loss = fig.axes[0].get_lines()[0]
    assert list(loss.get_xdata()) == [1, 2, 3] and list(loss.get_ydata()) == [0.75, 0.25, 0.14]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3]  # whole epochs
    assert history_stage("models/shrinkage_esol_history.csv") == "shrinkage_esol"


def test_history_without_epochs_is_a_clear_error(tmp_path):
    csv = tmp_path / "x_history.csv"
    csv.write_text("step,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="no epoch column"):
        viz.plot_history(tmp_path / "x.png", viz.read_history(csv), "x")


# -- HTML table pages ----------------------------------------------------------------

class _Tables(HTMLParser):
    """Rows of every <table> as lists of cell texts; <img> sources."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


MD = """# Run

## Table 3: segmentation on `val`

DeepLab on **each** source, see [csv](table3.csv).

| Training labels | mIoU | mIoU + CRF |
|---|---|---|
| ground truth (fully supervised) | 85.7 | 86.0 |
| `esol` pseudo masks | 58.8 | 60.1 |

![Segmentation predictions](fig.png)

## Table 6: seeds

| Method | seed mIoU (%) |
|---|---|
| `cam` | 31.8 |
"""


def test_markdown_tables_become_html_tables_and_images_are_embedded(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    p = _parse(markdown_to_html(MD, tmp_path))
    assert p.tables[0] == [["Training labels", "mIoU", "mIoU + CRF"],
                           ["ground truth (fully supervised)", "85.7", "86.0"],
                           ["esol pseudo masks", "58.8", "60.1"]]
    assert p.tables[1] == [["Method", "seed mIoU (%)"], ["cam", "31.8"]]
    assert p.images == ["data:image/png;base64,iVBORyBmYWtl"]
    body = markdown_to_html(MD, tmp_path, images=False)
    assert "<img" not in body and "<code>val</code>" in body and "<strong>each</strong>" in body
    assert '<a href="table3.csv">csv</a>' in body


def test_a_section_runs_to_the_next_heading_of_its_level(tmp_path):
    t3 = section(MD, "## Table 3")
    assert t3.startswith("## Table 3") and "85.7" in t3 and "## Table 6" not in t3
    assert section(MD, "## Table 6").strip().endswith("| `cam` | 31.8 |")
    with pytest.raises(ValueError, match="Table 9"):
        section(MD, "## Table 9")
    write_html(tmp_path / "t3.html", t3, tmp_path, images=False)
    page = (tmp_path / "t3.html").read_text()
    assert "<title>Table 3: segmentation on `val`</title>" in page
    assert len(_parse(page).tables[0]) == 3


# -- console progress ----------------------------------------------------------------

def test_progress_line_format():
    line = progress_line("classifier", 2, 4, 12, 24, 0.24784, 57.2, 57.2, True, "13:17:57")
    assert line == ("13:17:57 classifier epoch 2/4 done: step 12/24 (50%), loss 0.2478 "
                    "| elapsed 0:00:57, ETA 0:00:57")
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "?"
    # parallel jobs of one stage are told apart by their checkpoint's name
    assert stage_name("expansion", "results/x/models/expansion_clip.pt.partial") == "expansion_clip"
    assert stage_name("classifier", None) == "classifier"


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_stage_progress_prints_each_epoch_and_heartbeats_with_an_eta():
    clock, out = _Clock(), io.StringIO()
    # 3 epochs of 4 steps, resumed at step 4: the ETA counts only steps this run made.
    prog = StageProgress("shrinkage_esol", 12, 4, start_step=4, stream=out, heartbeat=5, clock=clock)
    lines = []
    for step, loss in zip(range(5, 13), (1.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0), strict=True):
        clock.t += 2.0  # two seconds per step
        lines.append(prog.update(step, loss))
    printed = [ln for ln in lines if ln]
    assert out.getvalue().splitlines() == printed
    # step 5 at 2 s: no line; step 6 at 4 s: no; step 7 at 6 s: heartbeat (6 - 0 >= 5)
    assert lines[:2] == [None, None]
    assert "epoch 2/3 running: step 7/12 (58%), loss 2 | elapsed 0:00:06, ETA 0:00:10" in lines[2]
    # epoch end at step 8 (8 s): mean loss of epoch 2 = 2.0, ETA = 4 steps * 2 s
    assert "epoch 2/3 done: step 8/12 (67%), loss 2 | elapsed 0:00:08, ETA 0:00:08" in lines[3]
    assert "epoch 3/3 done: step 12/12 (100%), loss 1 | elapsed 0:00:16, ETA 0:00:00" in lines[-1]
    assert len(printed) == 4  # heartbeat, epoch 2, heartbeat at step 11 (6 s after 8), epoch 3


def test_stage_progress_is_silent_when_the_console_is_the_log(monkeypatch):
    # Without a log file (a terminal, a notebook) tqdm's bar is already on stderr.
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert StageProgress("x", 4, 2).stream is None
    # Under rule_logging stderr is the log: the lines go to the original stderr.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert StageProgress("x", 4, 2).stream is sys.__stderr__


def test_line_stream_turns_carriage_returns_into_lines():
    buf = io.StringIO()
    s = LineStream(buf)
    s.write("\rbar  0%")
    s.write("\rbar 50%")
    s.write("plain ")
    s.write("text\n")
    s.write("\rbar 100%\n")
    assert buf.getvalue() == "bar  0%\nbar 50%\nplain text\nbar 100%\n"
    assert not s.isatty()
