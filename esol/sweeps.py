"""Method variants and hyperparameter sweeps: the paper's ablations (section 4.3).

A seed method is Table 6's five switches plus, optionally, ``overrides`` of the stage
hyperparameters it depends on (``{"expansion.alpha": 0.03, "shrinkage.mu": 0.1}``). A
sweep (Figure 6) is a base method and one key taken over a list of values; it expands
into one variant per value. Variants share every upstream output they do not change:
the Expansion checkpoint is keyed by :func:`expansion_tag`, a readable digest of the
Expansion settings that differ from the config's, so a Shrinkage-only override reuses
its base's Expansion model.

Plain data in, plain data out: the workflow (workflow/rules/common.smk) calls these at
parse time; nothing here reads a config file.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

SWITCH_KEYS = ("expansion_offsets", "clipping", "shrinkage", "shrinkage_offsets", "area_loss")

# Keys a variant may override. Only the two stages a method owns: the classifier (and
# model.kernel_size, which shapes the classifier's conv_e/conv_s) is shared by every
# method, so a per-variant kernel size would need a classifier per variant.
OVERRIDABLE: dict[str, tuple[str, ...]] = {
    "expansion": ("alpha", "clip_beta", "lr", "epochs", "momentum", "batch_size", "max_offset"),
    "shrinkage": ("gamma", "mu", "lr", "epochs", "momentum", "batch_size", "max_offset",
                  "area_classes"),
}
ALLOWED_KEYS = tuple(f"{stage}.{k}" for stage, keys in OVERRIDABLE.items() for k in keys)


def format_value(value: Any) -> str:
    """A value as it appears in names and tags: ``0.003``, ``1e-05``, ``1``, ``all``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


def check_overrides(where: str, overrides: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming ``where.<key>`` for a key no stage has."""
    for key in overrides:
        if key not in ALLOWED_KEYS:
            raise ValueError(f"config key {where}.{key}: not an overridable setting; "
                             f"allowed: {', '.join(ALLOWED_KEYS)}")


def switches(spec: Mapping[str, Any]) -> dict[str, bool]:
    """Table 6's switches of a method, without its overrides."""
    return {k: bool(spec[k]) for k in SWITCH_KEYS}


def effective_section(section: Mapping[str, Any], stage: str,
                      overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config section ``stage`` (expansion | shrinkage) with a variant's overrides."""
    out = dict(section)
    prefix = f"{stage}."
    for key, value in (overrides or {}).items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out


def expansion_tag(clipping: bool, base: Mapping[str, Any], section: Mapping[str, Any]) -> str:
    """Name of the Expansion checkpoint for these settings: ``clip``, ``noclip``, or with
    the keys that differ from the config's section, ``clip-alpha0.03-lr0.001``.

    The same settings always give the same tag, so variants that agree on Expansion
    share one trained model; clip_beta is left out without clipping (it changes nothing).
    """
    parts = ["clip" if clipping else "noclip"]
    for key in OVERRIDABLE["expansion"]:
        if key == "clip_beta" and not clipping:
            continue
        if key in section and section[key] != base.get(key):
            parts.append(key.replace("_", "") + format_value(section[key]))
    return "-".join(parts)


def variant_name(base: str, sweep: str, value: Any) -> str:
    """``esol`` swept by ``alpha`` at 0.003 -> ``esol_alpha0.003`` (a path-safe wildcard)."""
    return f"{base}_{sweep}{format_value(value)}"


def expand_sweeps(methods: Mapping[str, Mapping[str, Any]], sweeps: Mapping[str, Mapping[str, Any]],
                  sections: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[Any, str]]]]:
    """The variants sweeps add, and per sweep its (value, method) pairs in value order.

    ``sections`` holds the config's ``expansion`` and ``shrinkage`` sections; a value
    equal to the base method's effective setting is the base method itself (no new
    variant, no second training of the same thing).
    """
    variants: dict[str, dict[str, Any]] = {}
    members: dict[str, list[tuple[Any, str]]] = {}
    for name, sweep in sweeps.items():
        where = f"sweeps.{name}"
        base = sweep["base"]
        if base not in methods:
            raise ValueError(f"config key {where}.base names {base!r}, not among methods: "
                             f"{list(methods)}")
        key = sweep["key"]
        check_overrides(where + ".key", {key: None})
        stage, sub = key.split(".", 1)
        spec = methods[base]
        current = effective_section(sections[stage], stage, spec.get("overrides"))[sub]
        pairs = []
        for value in sorted(sweep["values"]):
            if value == current:
                pairs.append((value, base))
                continue
            vname = variant_name(base, name, value)
            if vname in methods:
                raise ValueError(f"config key {where}: variant {vname!r} clashes with a method")
            variants[vname] = {**spec, "overrides": {**spec.get("overrides", {}), key: value}}
            pairs.append((value, vname))
        members[name] = pairs
    return variants, members


SWEEP_COLUMNS = ("value", "method", "miou", "threshold", "precision", "recall", "t0",
                 "precision_at_t0", "recall_at_t0")


def sweep_rows(pairs: Sequence[tuple[Any, str]], summaries: Mapping[str, Mapping[str, Any]],
               curves: Mapping[str, Mapping[str, Sequence[float]]], t0: float | None
               ) -> list[dict[str, Any]]:
    """Figure 6's points: each member's best seed mIoU, and its foreground precision and
    recall at the baseline's best threshold ``t0`` (its own best threshold without one)."""
    rows = []
    for value, method in pairs:
        s = summaries[method]
        row = {"value": value, "method": method, "miou": s["miou"], "threshold": s["threshold"],
               "precision": s["precision"], "recall": s["recall"]}
        t = s["threshold"] if t0 is None else t0
        c = curves[method]
        i = min(range(len(c["threshold"])), key=lambda j: abs(float(c["threshold"][j]) - t))
        row.update(t0=float(c["threshold"][i]), precision_at_t0=float(c["precision"][i]),
                   recall_at_t0=float(c["recall"][i]))
        rows.append(row)
    return rows


def write_sweep_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    from esol.tables import write_csv

    write_csv(path, rows, SWEEP_COLUMNS)


def read_sweep_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a sweep CSV; numbers as floats (``value`` too where it parses)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in r.items():
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            rows.append(out)
    if not rows:
        raise ValueError(f"{path}: a sweep CSV with no rows")
    return rows


def plot_sweep(csv_path: str | os.PathLike, png_path: str | os.PathLike, key: str,
               log_x: bool, title: str | None = None) -> list[dict[str, Any]]:
    """Figure 6-style panel from a sweep CSV: seed mIoU, and foreground precision and
    recall at the baseline's threshold, against the swept value (log axis if ``log_x``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_sweep_table(csv_path)
    xs = [r["value"] for r in rows]
    if log_x and any(not isinstance(x, float) or x <= 0 or math.isnan(x) for x in xs):
        raise ValueError(f"{csv_path}: a log axis needs positive numeric values of {key}, got {xs}")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(xs, [100 * r["miou"] for r in rows], "o-", label="seed mIoU (%)")
    ax.plot(xs, [100 * r["precision_at_t0"] for r in rows], "s--", label="precision @ t0 (%)")
    ax.plot(xs, [100 * r["recall_at_t0"] for r in rows], "^--", label="recall @ t0 (%)")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel("%")
    ax.set_title(title or f"Sensitivity to {key} (Fig. 6)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return rows


def sweep_figure(sweep: Mapping[str, Any], members: Sequence[Sequence[Any]],
                 metrics: Sequence[str | os.PathLike], curves: Sequence[str | os.PathLike],
                 baseline_json: str | os.PathLike | None, out_csv: str | os.PathLike,
                 out_png: str | os.PathLike) -> list[dict[str, Any]]:
    """Rule ``sweep_figure``: a sweep's members' eval_seed files -> its CSV and panel.

    ``members`` are (value, method) pairs in the order of ``metrics`` and ``curves``
    (eval_seed's JSON summary and per-threshold CSV of each member).
    """
    import json

    from esol.evaluate import read_sweep_csv

    pairs = [(v, m) for v, m in members]
    summaries = {m: json.loads(open(p).read()) for (_, m), p in zip(pairs, metrics, strict=True)}
    table = {m: read_sweep_csv(p) for (_, m), p in zip(pairs, curves, strict=True)}
    t0 = json.loads(open(baseline_json).read())["threshold"] if baseline_json else None
    rows = sweep_rows(pairs, summaries, table, t0)
    write_sweep_table(out_csv, rows)
    plot_sweep(out_csv, out_png, sweep["key"], bool(sweep.get("log", False)))
    return rows
