"""Learning checks: did a stage learn anything, measured against what learning nothing gives.

A classifier that predicts "absent" for every class scores the all-absent rate in label
accuracy (0.8 with two present classes out of ten) and a loss near the class prior's;
its CAMs are then zero everywhere and every later stage runs on without complaint. The
functions here put each stage's figures beside a trivial baseline:

* classifier: mean average precision (mAP) of its image-level scores, against the mAP
  of a constant score (which is each class's prevalence), and its loss against the
  loss of the best constant prediction (the class prior);
* CAM extraction: the share of present-class maps that are empty or constant;
* Expansion/Shrinkage: offsets that never moved, maps that collapsed;
* IRN: boundary maps that are constant;
* DeepLab: a prediction that holds one class only.

Everything is a pure function of arrays (no config, no files), so a notebook can use
it; a failed check raises :class:`LearningError` with one line naming the stage, its
figures, the config key of the threshold and the likely causes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from esol.utils import TrainingError


class LearningError(TrainingError):
    """A stage ran to its end but its model did no better than a trivial baseline."""


# What usually makes each stage learn nothing; the error message ends with these.
CAUSES: dict[str, str] = {
    "classifier": ("too few optimiser steps for a from-scratch network (raise classifier.epochs "
                   "or classifier.min_steps), a learning rate too high or too low "
                   "(classifier.lr, classifier.warmup_steps), or classes too small or too alike "
                   "to tell apart at classifier.crop pixels"),
    "cam": ("the classifier predicts every class absent (check its mAP in "
            "classifier_history.csv); the CAMs of such a network are zero everywhere"),
    "expansion": ("the classifier's maps are empty (no gradient reaches the offsets), or its "
                  "loss is already ~0 so Eq. 5's gradient vanishes (a saturated classifier), or "
                  "expansion.lr is too small for expansion.epochs"),
    "shrinkage": ("shrinkage.mu too large (L_area wipes the maps out), or shrinkage.lr too "
                  "small for shrinkage.epochs"),
    "irn": ("the IR labels hold no confident foreground or background (check the seeds and "
            "irn.labels), or irn.train.lr / irn.train.epochs too small"),
    "psa": ("the affinity labels hold no confident foreground or background pairs (check the "
            "seeds and psa.labels), or psa.train.lr / psa.train.epochs too small"),
    "deeplab": ("the pseudo masks are (nearly) all one class, or segmentation.train.epochs / "
                "segmentation.train.lr too small for the network to leave its initial bias"),
}


# ----------------------------------------------------------------- average precision


def average_precision(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Non-interpolated average precision of one class: ``sum_n (R_n - R_{n-1}) P_n``.

    ``P_n``, ``R_n`` are precision and recall when every score >= the n-th highest
    distinct score counts as positive (tied scores enter together, as in scikit-learn's
    ``average_precision_score``). A constant score gives the prevalence. NaN when
    ``labels`` holds no positive (AP undefined).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    # The last index of each run of equal scores: one threshold per distinct score.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = tp[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of each column of ``scores`` (N, K) against multi-hot ``labels`` (N, K); NaN where
    a class has no positive image."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, K)")
    return np.array([average_precision(scores[:, k], labels[:, k]) for k in range(scores.shape[1])])


def mean_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean of :func:`per_class_ap` over the classes with at least one positive image."""
    ap = per_class_ap(scores, labels)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


# -------------------------------------------------------------------- trivial baselines


def all_absent_accuracy(labels: np.ndarray) -> float:
    """Label accuracy of predicting every class absent: the share of zeros in ``labels``."""
    return float(1.0 - np.asarray(labels, dtype=np.float64).mean())


def prior_loss(labels: np.ndarray, eps: float = 1e-7) -> float:
    """Loss (mean sigmoid cross-entropy, Eq. 1) of the best constant prediction: each
    class's probability fixed at its prevalence ``p_k`` over ``labels`` (N, K)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(y.mean(axis=0, keepdims=True), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def prior_map(labels: np.ndarray) -> float:
    """mAP of a constant score (the class prior): the mean prevalence of the classes with
    a positive image (:func:`average_precision` of ties is the prevalence)."""
    y = np.asarray(labels, dtype=np.float64)
    prevalence = y.mean(axis=0)
    present = y.sum(axis=0) > 0
    return float(prevalence[present].mean()) if present.any() else float("nan")


def bce_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean sigmoid cross-entropy of ``logits`` (N, K): the classifier's loss (Eq. 1)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    # log(1 + exp(-|z|)) + max(z, 0) - y z, the stable form of the cross-entropy.
    return float((np.logaddexp(0.0, -np.abs(z)) + np.maximum(z, 0.0) - y * z).mean())


def classifier_figures(logits: np.ndarray, labels: np.ndarray,
                       classes: Sequence[str] | None = None) -> dict[str, float]:
    """The classifier's figures on one set of images beside its trivial baselines.

    Keys: ``map``, ``prior_map``, ``loss``, ``prior_loss``, ``label_accuracy``,
    ``all_absent_accuracy`` and ``ap_<class>`` per class (NaN where absent from the set).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    ap = per_class_ap(logits, labels)
    names = list(classes) if classes is not None else [str(k) for k in range(labels.shape[1])]
    return {"map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
            "prior_map": prior_map(labels),
            "loss": bce_loss(logits, labels), "prior_loss": prior_loss(labels),
            "label_accuracy": float(((logits > 0) == (labels > 0.5)).mean()),
            "all_absent_accuracy": all_absent_accuracy(labels),
            **{f"ap_{name}": float(v) for name, v in zip(names, ap)}}


# --------------------------------------------------------------- maps and predictions


def map_figures(maps: Iterable[np.ndarray], tol: float = 1e-3) -> dict[str, float]:
    """Shares of localisation maps (each (H, W), one per present class) that are empty
    (max <= ``tol``) or constant (max - min <= ``tol``, not empty); ``maps`` the count."""
    n = empty = constant = 0
    for m in maps:
        m = np.asarray(m, dtype=np.float32)
        hi, lo = float(m.max()), float(m.min())
        n += 1
        if hi <= tol:
            empty += 1
        elif hi - lo <= tol:
            constant += 1
    if n == 0:
        return {"maps": 0, "empty_share": 0.0, "constant_share": 0.0, "uninformative_share": 0.0}
    return {"maps": n, "empty_share": empty / n, "constant_share": constant / n,
            "uninformative_share": (empty + constant) / n}


def prediction_figures(predictions: Iterable[np.ndarray], ignore: int = 255) -> dict[str, float]:
    """Classes a segmentation predicts over a split: their number and the largest share."""
    counts: dict[int, int] = {}
    for p in predictions:
        values, n = np.unique(np.asarray(p), return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            if v != ignore:
                counts[v] = counts.get(v, 0) + c
    total = sum(counts.values())
    return {"classes_predicted": len(counts),
            "top_class_share": max(counts.values()) / total if total else 1.0}


# ------------------------------------------------------------------------ the checks


def _causes(stage: str) -> str:
    return CAUSES.get(stage.split("[")[0], "see docs/learning_checks.md")


def _format(figures: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in figures.items() if not k.startswith("ap_"))


def learned_enough(figures: Mapping[str, float], margin: float, score: str = "map",
                   baseline: str = "prior_map") -> bool:
    """``figures[score] >= figures[baseline] + margin``, both finite: what
    :func:`check_learned` requires."""
    value, base = figures[score], figures[baseline]
    return bool(np.isfinite(value) and np.isfinite(base) and value >= base + margin)


def check_learned(stage: str, figures: Mapping[str, float], margin: float, *,
                  score: str = "map", baseline: str = "prior_map",
                  key: str = "checks.min_map_gain", causes: str | None = None) -> None:
    """Raise :class:`LearningError` unless ``figures[score] >= figures[baseline] + margin``.

    The one-line message names the stage, its figures, the config ``key`` of the margin
    and the likely ``causes`` (default: :data:`CAUSES` of the stage).
    """
    if learned_enough(figures, margin, score, baseline):
        return
    value, base = figures[score], figures[baseline]
    raise LearningError(
        f"{stage}: learned nothing usable: {score} {value:.4f} does not beat the trivial "
        f"baseline {baseline} {base:.4f} by {margin} ({key}); figures: {_format(figures)}. "
        f"Likely causes: {causes or _causes(stage)}.")


def check_at_most(stage: str, figures: Mapping[str, float], name: str, limit: float, *,
                  key: str, causes: str | None = None) -> None:
    """Raise :class:`LearningError` when ``figures[name] > limit`` (or is not finite)."""
    _check_bound(stage, figures, name, limit, True, key, causes)


def check_at_least(stage: str, figures: Mapping[str, float], name: str, limit: float, *,
                   key: str, causes: str | None = None) -> None:
    """Raise :class:`LearningError` when ``figures[name] < limit`` (or is not finite)."""
    _check_bound(stage, figures, name, limit, False, key, causes)


def _check_bound(stage: str, figures: Mapping[str, float], name: str, limit: float,
                 upper: bool, key: str, causes: str | None) -> None:
    value = figures[name]
    if np.isfinite(value) and (value <= limit if upper else value >= limit):
        return
    raise LearningError(
        f"{stage}: learned nothing usable: {name} {value:.4g} "
        f"{'exceeds' if upper else 'is below'} {limit} ({key}); figures: {_format(figures)}. "
        f"Likely causes: {causes or _causes(stage)}.")


# Defaults of config section ``checks`` (workflow/schemas/config.schema.yaml documents them);
# a notebook's config without the section gets these.
DEFAULTS: dict[str, float] = {
    "enabled": True,
    "min_map_gain": 0.05,
    "eval_images": 200,
    "max_empty_cam_share": 0.5,
    "min_offset": 1e-12,
    "max_empty_map_share": 0.5,
    "max_constant_boundary_share": 0.5,
    "min_predicted_classes": 2,
}


def checks_config(cfg: Mapping) -> dict:
    """Section ``checks`` of a config with :data:`DEFAULTS` for missing keys."""
    return {**DEFAULTS, **dict(cfg.get("checks") or {})}
