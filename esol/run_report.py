"""The run's report: every evaluation of one dataset in one markdown file with its figures.

Rule ``report`` writes ``results/<dataset>/report/report.md`` and, beside it, every
figure and table it links to (so the folder can be copied or served as it is):

* Table 3: segmentation mIoU on the evaluation split, without and with CRF, one row
  per label source (the supervised ``gt`` row first), and per-class IoU;
* a Fig. 4-style grid: image | ground truth | each source's prediction (with CRF);
* Table 1 (Seed / CRF / Mask mIoU per method) as the refinement's ``table1`` rule wrote
  it, when given (without it a line says refinement is not configured; nothing faked);
* Table 6 (seed ablation, as ``compare_seeds`` wrote it), the threshold curves and
  Fig. 3d's recall curve, and the Fig. 5 grid;
* a Table 5-style time table: wall time, CPU time and peak memory of every job, from
  the Snakemake ``benchmark:`` files, with a bar chart per rule.

Each section is a function of its inputs returning markdown, so another evaluation
slots in as one more input and one more section.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esol.data.voc import DatasetInfo, read_image, read_label
from esol.evaluate import GROUND_TRUTH_255, PREDICTION_255, ground_truth_source, read_sweep_csv
from esol.tables import markdown, write_csv
from esol.saliency import SOURCE_SUFFIX
from esol.utils import atomic_path

log = logging.getLogger(__name__)

GT = "gt"


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


def _write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    write_csv(path, rows, None if rows else ["empty"])


def _copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# -- Table 3: segmentation ------------------------------------------------------

def source_label(source: str) -> str:
    if source == GT:
        return "ground truth (fully supervised)"
    if source.endswith(SOURCE_SUFFIX):  # Table 4's rows "with S" (esol/saliency.py)
        return f"`{source[: -len(SOURCE_SUFFIX)]}` pseudo masks + saliency (S)"
    return f"`{source}` pseudo masks"


def table3_rows(evaluations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per label source: mIoU without and with CRF; the supervised row first;
    which ground truth scored it and how 255 pixels were counted, when the JSON says."""
    ordered = sorted(evaluations, key=lambda e: e["source"] != GT)
    rows = []
    for e in ordered:
        gt = e.get("ground_truth", {})
        rows.append({"source": e["source"], "split": e["split"], "images": e["images"],
                     "miou": e["raw"]["miou"], "miou_crf": e["crf"]["miou"],
                     "pixel_accuracy": e["raw"]["pixel_accuracy"],
                     "pixel_accuracy_crf": e["crf"]["pixel_accuracy"],
                     "ground_truth": gt.get("masks", ""),
                     "threshold_choice": e.get("threshold_choice", ""),
                     "ground_truth_255": gt.get("ground_truth_255", ""),
                     "prediction_255": gt.get("prediction_255", "")})
    return rows


def _backbone_name(model: Mapping[str, Any]) -> str:
    name = model.get("name", "resnet")
    return f"ResNet-{model['depth']}" if name == "resnet" else {"efficientnet_lite0": "EfficientNet-Lite0"}.get(name, name)


def table3_section(evaluations: Sequence[Mapping[str, Any]], model: Mapping[str, Any]) -> str:
    if not evaluations:
        return ("## Table 3: segmentation\n\nNo label source is configured "
                "(`segmentation.supervised` is false and `segmentation.methods` is empty).\n")
    rows = table3_rows(evaluations)
    split, images = rows[0]["split"], rows[0]["images"]
    text = [f"## Table 3: segmentation on `{split}`\n",
            f"DeepLab-v2 ({_backbone_name(model)}, output stride 8, ASPP "
            f"{', '.join(map(str, model['aspp_rates']))}) trained on each label source of the "
            f"training split, predicted with multi-scale + flip inference, mIoU (%) over {images} "
            "images without and with dense CRF"
            + (f" against `{split}`'s {rows[0]['ground_truth']} masks (255 pixels ignored; no "
               "threshold, DeepLab's argmax; a prediction holding 255 is refused). The "
               "pseudo-mask rows were trained on labels that read no mask of the training split "
               "(see \"Where each number's ground truth and threshold come from\")"
               if rows[0]["ground_truth"] else "") + ".\n",
            markdown(["Training labels", "mIoU", "mIoU + CRF", "pixel acc.", "pixel acc. + CRF"],
                      [[source_label(r["source"]), _pct(r["miou"]), _pct(r["miou_crf"]),
                        _pct(r["pixel_accuracy"]), _pct(r["pixel_accuracy_crf"])] for r in rows])]
    gt = next((r for r in rows if r["source"] == GT), None)
    if gt is not None and len(rows) > 1:
        gaps = ", ".join(f"`{r['source']}` {100 * (r['miou_crf'] / gt['miou_crf']):.0f}%"
                         for r in rows if r["source"] != GT and gt["miou_crf"])
        text.append(f"\nShare of the fully supervised mIoU (with CRF) reached: {gaps}.\n")
    classes = list(evaluations[0]["crf"]["per_class_iou"])
    ordered = sorted(evaluations, key=lambda e: e["source"] != GT)
    text += ["\nPer-class IoU (%) with CRF:\n",
             markdown(["Training labels", *classes],
                       [[source_label(e["source"]), *(_pct(e["crf"]["per_class_iou"][c]) for c in classes)]
                        for e in ordered])]
    return "\n".join(text)


def fig4_grid(path: str | os.PathLike, info: DatasetInfo, split: str,
              predictions: Mapping[str, str | os.PathLike], n_images: int) -> list[str]:
    """Image | ground truth | one prediction per label source, as the paper's Fig. 4."""
    from esol.viz import image_grid, image_miou

    ids = [i for i in info.ids(split) if info.labels.get(split, {}).get(i)][:n_images]
    ids = ids or info.ids(split)[:n_images]
    rows, notes = [], []
    for image_id in ids:
        gt = read_label(info.layout.gt_mask(image_id))
        preds = [read_label(Path(d) / f"{image_id}.png") for d in predictions.values()]
        rows.append([read_image(info.layout.image(image_id)), gt, *preds])
        notes.append([None, None, *(f"mIoU {100 * image_miou(p, gt):.0f}" for p in preds)])
    titles = ["image", "ground truth", *(f"{'supervised' if s == GT else s} + CRF" for s in predictions)]
    image_grid(path, rows, titles, row_titles=ids, classes=info.classes, notes=notes)
    return ids


# -- Table 1: seeds, seeds + CRF, pseudo masks (refinement) ----------------------

TABLE1_KEYS = ("table_md", "table_csv", "grid_png")


def table1_section(table1: Mapping[str, str | os.PathLike], report_dir: str | os.PathLike) -> str:
    """Table 1 as the refinement's ``table1`` rule wrote it, with links to its CSV and grid.

    ``table1`` holds ``table_md``, ``table_csv`` and ``grid_png``; links are relative to
    ``report_dir``. Empty: a line saying refinement is not configured (nothing faked).
    """
    head = "## Table 1: seeds, seeds + CRF and pseudo masks\n"
    if not table1:
        return (f"{head}\nRefinement (seed CRF, the refiners' pseudo masks) is not configured "
                "in this run, so there is no Table 1.\n")
    missing = [k for k in TABLE1_KEYS if k not in table1]
    if missing:
        raise ValueError(f"Table 1 inputs lack {missing}")
    rel = {k: Path(os.path.relpath(table1[k], report_dir)).as_posix() for k in TABLE1_KEYS}
    return "\n".join([head, Path(table1["table_md"]).read_text().strip(), "",
                      f"As CSV: [{Path(rel['table_csv']).name}]({rel['table_csv']}).\n",
                      "Seeds, seeds after CRF and pseudo masks per method, beside the ground truth:\n",
                      f"![Seeds, CRF and pseudo masks per method]({rel['grid_png']})\n"])


# -- Table 5 and Figure 6, when the run has them ----------------------------------------

def table5_section(table5_md: str | os.PathLike | None) -> str:
    """The paper's Table 5 as rule ``table5`` wrote it; empty without AdvCAM in the run
    (the table compares ESOL's pseudo-label cost with AdvCAM's)."""
    if not table5_md:
        return ""
    return "\n".join(["## Table 5: pseudo-label generation time\n",
                      Path(table5_md).read_text().strip(), "",
                      "As CSV: [table5.csv](table5.csv).\n"])


def sweeps_section(sweeps: Mapping[str, Mapping[str, str | os.PathLike]],
                   report_dir: str | os.PathLike) -> str:
    """Figure 6: one panel per sweep (``{name: {png, csv}}`` as rule ``sweep_figure``
    wrote them), copied beside the report as ``fig6_<name>.png``, with its points as a
    table. Empty without sweeps in the config."""
    from esol.sweeps import read_sweep_table
    from esol.tables import markdown

    if not sweeps:
        return ""
    parts = ["## Figure 6: sensitivity sweeps\n",
             "Each panel: the swept method's best seed mIoU (oracle threshold on the seed "
             "split's own masks) and its foreground precision and recall at t0, the "
             "baseline's best threshold, against the swept value.\n"]
    for name, files in sweeps.items():
        png = Path(report_dir) / f"fig6_{name}.png"
        _copy(files["png"], png)
        rows = read_sweep_table(files["csv"])
        parts += [f"### Sweep `{name}`\n", f"![Figure 6, sweep {name}]({png.name})\n",
                  markdown(["value", "method", "seed mIoU (%)", "best t", "t0", "precision @ t0",
                            "recall @ t0"],
                           [[f"{r['value']:g}" if isinstance(r["value"], float) else r["value"],
                             f"`{r['method']}`", f"{100 * r['miou']:.1f}", f"{r['threshold']:.2f}",
                             f"{r['t0']:.2f}", f"{r['precision_at_t0']:.3f}",
                             f"{r['recall_at_t0']:.3f}"] for r in rows]), ""]
    return "\n".join(parts)


# -- where every number's ground truth and threshold come from -------------------------

def provenance_rows(config: Mapping[str, Any], info: DatasetInfo,
                    seeds: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per kind of number in the report: the ground truth that produced it (split
    and mask folder), how its threshold was chosen, and how 255 pixels are counted.

    Implementations in the field differ on all four; docs/method.md ("What ground truth
    reaches what") explains the rules.
    """
    d, seg, refine = config["dataset"], config["segmentation"], config["refine"]
    seed_split, eval_split, train_split = d["seed_split"], seg["eval_split"], d["train_split"]
    tuning = d.get("tuning_split")
    preset = next((s["preset"]["threshold_choice"] for s in seeds.values() if "preset" in s),
                  "fixed in config (refine.threshold)" if refine["threshold"] != "tuned"
                  else f"tuned on {tuning}")

    def gt(split: str) -> str:
        return f"`{split}`, {ground_truth_source(info, split)}" if split in info.labels else f"`{split}`"

    oracle = f"oracle: the best of the sweep against `{seed_split}`'s own masks"
    rows = [
        {"number": "Table 3 mIoU, every row", "ground_truth": gt(eval_split),
         "threshold": "none (argmax of DeepLab; CRF settings fixed in config)",
         "prediction_255": PREDICTION_255["rejected"]},
        {"number": "Table 3 training labels, supervised row",
         "ground_truth": f"`{train_split}` masks (SegmentationClassAug first, as IRN)",
         "threshold": "none", "prediction_255": "255 in a training mask is ignored by the loss"},
        {"number": "Table 3 training labels, pseudo-mask rows; Table 1 Mask",
         "ground_truth": f"none of `{train_split}`; the preset threshold may come from "
                         + (gt(tuning) if tuning else "no split (config)"),
         "threshold": f"preset ({preset}) calibrates the maps (irn.calibrate_to); background "
                      "score fixed in config (irn.random_walk.bg_threshold)",
         "prediction_255": "IR labels: 255 = no relation label; pseudo masks hold none"},
        {"number": "Table 1 Seed and CRF (oracle t); Table 6 seed mIoU (oracle t)",
         "ground_truth": gt(seed_split), "threshold": oracle,
         "prediction_255": PREDICTION_255["none"]},
        {"number": "Table 1 Seed and CRF (preset t); Table 6 seed mIoU (preset t)",
         "ground_truth": gt(seed_split), "threshold": f"preset: {preset}",
         "prediction_255": PREDICTION_255["none"]},
        {"number": "Table 1 Mask mIoU", "ground_truth": gt(seed_split),
         "threshold": "background score fixed in config (irn.random_walk.bg_threshold)",
         "prediction_255": PREDICTION_255["background"]},
        {"number": "Image-level labels (classifier, Expansion, Shrinkage)",
         "ground_truth": f"`{train_split}`: the classes present in each mask (as IRN's cls_labels)",
         "threshold": "none", "prediction_255": "–"},
    ]
    if seg.get("saliency"):
        sal = config["saliency"]
        maps = ("OpenCV's fine-grained static saliency of each image" if sal["source"] == "classical"
                else f"the maps in `{sal['source']}`")
        rows.append({"number": "Table 3 training labels, rows with saliency (S)",
                     "ground_truth": f"none of `{train_split}`; as the pseudo-mask rows, plus {maps}",
                     "threshold": f"saliency / 255 > {sal['threshold']} is salient, fixed in config "
                                  "(saliency.threshold)",
                     "prediction_255": "salient pixels the pseudo mask calls background are ignored "
                                       "by the loss"})
    if tuning:
        rows.append({"number": "Preset threshold (rule tune_threshold), never reported as a score",
                     "ground_truth": gt(tuning),
                     "threshold": f"best seed mIoU on `{tuning}`, which shares no image with "
                                  f"`{train_split}`, `{seed_split}` nor `{eval_split}` (checked)",
                     "prediction_255": PREDICTION_255["none"]})
    for r in rows:
        r["ground_truth_255"] = GROUND_TRUTH_255 if r["ground_truth"].startswith("`") else "–"
    return rows


def provenance_section(rows: Sequence[Mapping[str, str]]) -> str:
    return "\n".join([
        "## Where each number's ground truth and threshold come from\n",
        "A threshold marked **oracle** was chosen with the ground truth of the very split it is "
        "scored on (the paper's convention for Table 1 Seed/CRF and Table 6); it is reported, "
        "never used to make training labels. The **preset** threshold is fixed before any "
        "evaluation and is the only one that reaches IRN and DeepLab. A 255 in the ground "
        f"truth is {GROUND_TRUTH_255}.\n",
        markdown(["Number", "Ground truth (split, masks)", "Threshold", "255 in the prediction"],
                  [[r["number"], r["ground_truth"], r["threshold"], r["prediction_255"]]
                   for r in rows])])


# -- Table 6 and the seed figures -------------------------------------------------

def seeds_section(table6_md: str, split: str) -> str:
    return "\n".join([
        "## Table 6: seed quality per method\n", table6_md.strip(), "",
        f"![Seed mIoU, precision and recall against the background threshold on `{split}`]"
        "(threshold_curves.png)\n",
        "Foreground recall against the threshold (the paper's Fig. 3d); the dashed line is the "
        "baseline's best threshold.\n",
        "![Foreground recall against the background threshold](recall_vs_threshold.png)\n",
        "## Fig. 5: localization maps\n",
        "Input, the localization map of each method, ground truth.\n",
        "![Localization maps per method](fig5_grid.png)\n"])


# -- training curves --------------------------------------------------------------

def history_stage(path: str | os.PathLike) -> str:
    """``models/shrinkage_esol_history.csv`` -> ``shrinkage_esol``."""
    return Path(path).name.removesuffix(".csv").removesuffix("_history")


def training_figures(folder: str | os.PathLike, histories: Sequence[str | os.PathLike]) -> list[str]:
    """One curve figure per training stage, ``<folder>/<stage>.png``; returns the stages."""
    from esol.viz import plot_history, read_history

    Path(folder).mkdir(parents=True, exist_ok=True)
    stages = [history_stage(p) for p in histories]
    for stage, p in zip(stages, histories, strict=True):
        plot_history(Path(folder) / f"{stage}.png", read_history(p), stage)
    return stages


def training_section(stages: Sequence[str]) -> str:
    if not stages:
        return ""
    return "\n".join(["## Training curves\n",
                      "Per-epoch means of each training stage's loss (and its terms), label accuracy "
                      "where the stage has one, and the learning rate at the epoch's last step, from "
                      "`models/<stage>_history.csv`.\n",
                      *(f"![{s}: training curves](training/{s}.png)\n" for s in stages)])


# -- Table 5: time per rule ------------------------------------------------------

@dataclass
class BenchmarkRow:
    rule: str
    job: str
    seconds: float
    cpu_seconds: float | None
    max_rss_mb: float | None


def read_benchmarks(folder: str | os.PathLike, exclude: Sequence[str] = ("report",)) -> list[BenchmarkRow]:
    """Every ``<folder>/<rule>[/<wildcards...>].tsv`` Snakemake benchmark (first repeat).

    Rules in ``exclude`` are skipped (the report's own benchmark is written after it runs).
    """
    folder = Path(folder)
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        parts = path.relative_to(folder).with_suffix("").parts
        rule, job = parts[0], "/".join(parts[1:])
        if rule in exclude:
            continue
        with open(path, newline="") as f:
            records = list(csv.DictReader(f, delimiter="\t"))
        if not records:
            continue
        r = records[0]
        rows.append(BenchmarkRow(rule, job, float(r["s"]), _float(r.get("cpu_time")),
                                 _float(r.get("max_rss"))))
    return rows


def _float(v: str | None) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def times_section(rows: Sequence[BenchmarkRow]) -> str:
    if not rows:
        return "## Time per rule\n\nNo benchmark files were found.\n"
    total = sum(r.seconds for r in rows)
    table = markdown(
        ["Rule", "Job", "Wall time", "s", "CPU s", "Peak RSS (MB)"],
        [[f"`{r.rule}`", r.job or "–", _hms(r.seconds), f"{r.seconds:.1f}",
          "–" if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}",
          "–" if r.max_rss_mb is None else f"{r.max_rss_mb:.0f}"] for r in rows]
        + [["**all jobs**", "", f"**{_hms(total)}**", f"**{total:.1f}**", "", ""]])
    return "\n".join([
        "## Time per rule (the paper's Table 5, per stage)\n",
        "Wall time, CPU time and peak resident memory of every job of the run, from the "
        "Snakemake `benchmark:` files. Jobs that ran in parallel overlap, so the sum exceeds "
        "the run's wall time.\n", table, "\n![Wall time per rule](times.png)\n"])


# -- HTML pages of the tables (Snakemake's report shows .html in the page) -----------

# output key -> (heading the section starts with, whether its images are embedded)
PAGES = {"table3_html": ("## Table 3", False), "table1_html": ("## Table 1", True),
         "table6_html": ("## Table 6", False), "times_html": ("## Time per rule", False),
         "table5_html": ("## Table 5", False), "fig6_html": ("## Figure 6", True),
         "full_html": ("", True)}


def write_pages(out: Mapping[str, str | os.PathLike], text: str) -> None:
    """Each table section of the report's markdown ``text`` as a self-contained HTML
    page, for every key of :data:`PAGES` in ``out`` (``full_html``: the whole report)."""
    from esol.report_html import section, write_html

    base = Path(out["md"]).parent
    for key, (heading, images) in PAGES.items():
        if key in out:
            write_html(out[key], section(text, heading) if heading else text, base, images)


# -- the report -------------------------------------------------------------------

def build_report(*, config: Mapping[str, Any], dataset_json: str | os.PathLike,
                 segmentation: Sequence[str | os.PathLike], predictions: Sequence[str | os.PathLike],
                 sources: Sequence[str], seed_metrics: Sequence[str | os.PathLike],
                 sweeps: Sequence[str | os.PathLike], table6_md: str | os.PathLike,
                 table6_csv: str | os.PathLike, recall_png: str | os.PathLike,
                 fig5_png: str | os.PathLike, benchmarks: str | os.PathLike,
                 out: Mapping[str, str | os.PathLike],
                 table1: Mapping[str, str | os.PathLike] | None = None,
                 histories: Sequence[str | os.PathLike] = (), rule_order: Sequence[str] = (),
                 table5_md: str | os.PathLike | None = None,
                 sweeps_figures: Mapping[str, Mapping[str, str | os.PathLike]] | None = None) -> str:
    """Write the report and every file it links to; returns the markdown.

    ``segmentation`` and ``predictions`` follow ``sources``; ``seed_metrics`` and
    ``sweeps`` follow ``config['methods']``. ``table1`` (the refinement's
    ``table_md``, ``table_csv``, ``grid_png``) adds Table 1. ``out`` names the outputs:
    ``md``, ``table3``, ``table6``, ``times``, ``fig4``, ``thresholds``, ``recall``,
    ``fig5``, ``times_png``, and with ``histories`` (training history CSVs) ``training``,
    a folder that gets one curve figure per stage. ``rule_order`` (the workflow's rules,
    upstream first) orders the time table and figure. ``table5_md`` (rule ``table5``'s
    table, in the report folder) and ``sweeps_figures`` (``{sweep: {png, csv}}``) add
    Table 5 and Figure 6 when the run has them.
    """
    from esol.viz import pipeline_order, threshold_figure, times_figure

    info = DatasetInfo.from_json(dataset_json)
    methods = list(config["methods"])
    seg = config["segmentation"]
    evaluations = [json.loads(Path(p).read_text()) for p in segmentation]
    seeds = {m: json.loads(Path(p).read_text()) for m, p in zip(methods, seed_metrics, strict=True)}
    curves = {m: read_sweep_csv(p) for m, p in zip(methods, sweeps, strict=True)}
    seed_split = next(iter(seeds.values()))["split"]
    rank = {r: i for i, r in enumerate(pipeline_order((b.rule for b in read_benchmarks(benchmarks)), rule_order))}
    bench = sorted(read_benchmarks(benchmarks), key=lambda b: rank[b.rule])  # stable: jobs stay sorted

    _write_csv(out["table3"], table3_rows(evaluations))
    _copy(table6_csv, out["table6"])
    _write_csv(out["times"], [r.__dict__ for r in bench])
    times_figure(out["times_png"], {r: sum(b.seconds for b in bench if b.rule == r) for r in rank}, rule_order)
    stages = training_figures(out["training"], histories) if histories else []
    threshold_figure(out["thresholds"], curves, {m: s["threshold"] for m, s in seeds.items()}, seed_split)
    _copy(recall_png, out["recall"])
    _copy(fig5_png, out["fig5"])
    shown = fig4_grid(out["fig4"], info, seg["eval_split"], dict(zip(sources, predictions, strict=True)),
                      config["report"]["fig4_images"])

    d = config["dataset"]
    sizes = ", ".join(f"{s} {len(info.ids(s))}" for s in info.splits)
    parts = [
        f"# ESOL run report: `{d['name']}`\n",
        f"Dataset `{d['name']}` ({d['source']}): {info.num_classes} classes "
        f"({', '.join(info.classes)}); images per split: {sizes}. Seeds are evaluated on "
        f"`{seed_split}`, segmentation on `{seg['eval_split']}`. Every number below is read from "
        "the run's evaluation files; see the last section for where they are.\n",
        table3_section(evaluations, seg["model"]),
        "## Fig. 4: segmentation predictions\n",
        f"Predictions on `{seg['eval_split']}` (images {', '.join(shown)}): input, ground truth, and "
        "the CRF prediction of the DeepLab trained on each label source (the paper's Fig. 4).\n",
        "![Segmentation predictions](fig4_segmentation.png)\n",
    ]
    parts.append(table1_section(table1 or {}, Path(out["md"]).parent))
    parts += [seeds_section(Path(table6_md).read_text(), seed_split),
              sweeps_section(sweeps_figures or {}, Path(out["md"]).parent),
              table5_section(table5_md), training_section(stages),
              provenance_section(provenance_rows(config, info, seeds)), times_section(bench),
              "## Files\n",
              "Tables as CSV beside this file: `table3.csv`, `table6.csv`, `times.csv`. Under "
              f"`results/{d['name']}/`: `seeds/<method>/` (seed sweeps), `segmentation/<source>/` "
              "(predictions without CRF in `raw/`, with CRF in `crf/`, scores in `<split>.json`, "
              "and `submission/` for splits without masks), `models/` (checkpoints and training "
              "histories), `logs/` and `benchmarks/`.\n"]
    text = "\n".join(parts)
    _write_text(out["md"], text)
    write_pages(out, text)
    log.info("report: %d segmentation rows, %d methods, %d benchmarked jobs -> %s", len(evaluations),
             len(methods), len(bench), out["md"])
    return text
