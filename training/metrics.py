"""Segmentation metrics from one confusion matrix accumulated over a whole test set (mmseg 0.21 definitions).

mmseg 0.21 (``core/evaluation/metrics.py``) accumulates, per class c, the intersection I_c (pred == label == c), the
predicted area P_c and the label area L_c over all images, ignoring pixels whose label is ``ignore_index``; all of these
are row/column sums and the diagonal of the confusion matrix, so we keep the matrix and derive them at the end:

- ``IoU_c = I_c / (P_c + L_c - I_c)``, ``Acc_c = Recall_c = I_c / L_c``, ``Precision_c = I_c / P_c``,
  ``F1_c = 2 P R / (P + R)``; a 0/0 gives NaN (a class absent from labels and predictions).
- ``aAcc`` (overall accuracy, OA) = ``sum_c I_c / sum_c L_c``: an average over *pixels*.
- ``mIoU``, ``mF1``, ``mAcc``, ``mPrecision``, ``mRecall`` = ``np.nanmean`` of the per-class values: averages over
  *classes*, skipping NaN. Summaries are reported ×100 and rounded to 2 decimals, as mmseg prints them.

The matrix has ``len(class_names)`` rows, which may exceed the number of logits: Potsdam has 6 class names but a
5-class head with clutter (5) ignored, so the clutter row and column stay 0 and its metrics are NaN; its means are
over the 5 other classes. Labels >= the matrix size that are not the ignore index are an error (a wrong converter).
"""

from __future__ import annotations

import os
import typing

import numpy as np

from engine.atomic import write_json as write_json_atomic

PERCENT = 100.0
SUMMARY_DECIMALS = 2


class MetricsError(ValueError):
    """Labels or predictions do not fit the confusion matrix (wrong class count or ignore index)."""


class ConfusionMatrix:
    """Global confusion matrix ``counts[label, prediction]`` (int64 pixel counts).

    Args:
        num_classes: rows/columns, i.e. ``len(CLASSES)`` of the dataset (6 for Potsdam, 16 for iSAID).
        ignore_index: label value whose pixels are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int | None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one image: ``prediction`` and ``label`` are integer arrays of the same shape (H, W)."""
        if prediction.shape != label.shape:
            raise MetricsError(f"prediction shape {prediction.shape} != label shape {label.shape}")
        keep = np.ones(label.shape, dtype=bool) if self.ignore_index is None else label != self.ignore_index
        lab = label[keep].astype(np.int64)
        pred = prediction[keep].astype(np.int64)
        n = self.num_classes
        if lab.size and (lab.min() < 0 or lab.max() >= n):
            raise MetricsError(f"label values outside 0..{n - 1} (ignore index {self.ignore_index}): check the data")
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            raise MetricsError(f"prediction values outside 0..{n - 1}")
        self.counts += np.bincount(lab * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add ``other``'s counts (another rank's or another split's) to these."""
        self.counts += other.counts


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num.astype(np.float64) / den.astype(np.float64)


def per_class_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class metrics (fractions, NaN where undefined) from ``counts[label, prediction]``.

    Returns:
        ``{"IoU", "F1", "Precision", "Recall", "Acc"}`` → float64 arrays of shape (num_classes,), plus the integer
        areas ``"intersect"``, ``"pred_area"`` and ``"label_area"``.
    """
    intersect = np.diag(counts)
    pred_area = counts.sum(axis=0)
    label_area = counts.sum(axis=1)
    union = pred_area + label_area - intersect
    precision = _ratio(intersect, pred_area)
    recall = _ratio(intersect, label_area)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "IoU": _ratio(intersect, union),
        "F1": f1,
        "Precision": precision,
        "Recall": recall,
        "Acc": recall.copy(),
        "intersect": intersect,
        "pred_area": pred_area,
        "label_area": label_area,
    }


def _nanmean_percent(values: np.ndarray) -> float:
    if np.all(np.isnan(values)):
        return float("nan")
    return round(float(np.nanmean(values)) * PERCENT, SUMMARY_DECIMALS)


def kappa(counts: np.ndarray) -> float:
    """Cohen's kappa ×100 (2 decimals) of ``counts[label, prediction]``: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the overall accuracy and ``p_e`` the agreement expected by chance from the label and prediction
    marginals (over pixels). NaN without pixels; 100 when ``p_e == 1`` and every pixel agrees.
    """
    n = float(counts.sum())
    if n == 0:
        return float("nan")
    p_o = float(np.trace(counts)) / n
    p_e = float((counts.sum(axis=1).astype(np.float64) * counts.sum(axis=0)).sum()) / (n * n)
    if p_e >= 1.0:
        return PERCENT if p_o >= 1.0 else 0.0
    return round((p_o - p_e) / (1.0 - p_e) * PERCENT, SUMMARY_DECIMALS)


def summarize(counts: np.ndarray, class_names: typing.Sequence[str]) -> dict[str, typing.Any]:
    """All metrics in one JSON-ready dict: summaries (×100, 2 decimals) and a per-class table (×100).

    Keys: ``aAcc`` (= ``OA``), ``kappa`` (Cohen's kappa ×100, see :func:`kappa`), ``mIoU``, ``mF1`` (= mmseg's
    ``mFscore``), ``mPrecision``, ``mRecall``, ``mAcc``, ``per_class`` (list of dicts), ``confusion_matrix`` (nested
    lists) and ``class_names``.
    """
    if counts.shape != (len(class_names), len(class_names)):
        raise MetricsError(f"confusion matrix {counts.shape} does not match {len(class_names)} class names")
    pc = per_class_metrics(counts)
    total_label = int(pc["label_area"].sum())
    a_acc = (
        round(float(pc["intersect"].sum()) / total_label * PERCENT, SUMMARY_DECIMALS) if total_label else float("nan")
    )
    rows = []
    for i, name in enumerate(class_names):
        row: dict[str, typing.Any] = {"class": name}
        for key in ("IoU", "F1", "Precision", "Recall", "Acc"):
            v = float(pc[key][i])
            row[key] = None if np.isnan(v) else round(v * PERCENT, SUMMARY_DECIMALS)
        row["pixels"] = int(pc["label_area"][i])
        rows.append(row)
    return {
        "aAcc": a_acc,
        "OA": a_acc,
        "kappa": kappa(counts),
        "mIoU": _nanmean_percent(pc["IoU"]),
        "mF1": _nanmean_percent(pc["F1"]),
        "mPrecision": _nanmean_percent(pc["Precision"]),
        "mRecall": _nanmean_percent(pc["Recall"]),
        "mAcc": _nanmean_percent(pc["Acc"]),
        "per_class": rows,
        "class_names": list(class_names),
        "confusion_matrix": counts.tolist(),
    }


def format_table(summary: dict[str, typing.Any], eval_metrics: typing.Sequence[str] = ("mIoU", "mFscore")) -> str:
    """Console table: one row per class, then the summary line (mmseg-style, values ×100)."""
    cols = ["IoU", "Acc"] if "mIoU" in eval_metrics else []
    if "mFscore" in eval_metrics:
        cols += ["F1", "Precision", "Recall"]
    if not cols:
        cols = ["IoU", "F1", "Acc"]
    width = max(len(r["class"]) for r in summary["per_class"]) + 2
    lines = ["Class".ljust(width) + "".join(c.rjust(11) for c in cols)]
    for r in summary["per_class"]:
        cells = "".join(("nan" if r[c] is None else f"{r[c]:.2f}").rjust(11) for c in cols)
        lines.append(r["class"].ljust(width) + cells)
    keys = ["aAcc", "mIoU", "mAcc"] if "mIoU" in eval_metrics else ["aAcc"]
    if "mFscore" in eval_metrics:
        keys += ["mF1", "mPrecision", "mRecall"]
    lines.append("Summary: " + "  ".join(f"{k} {summary[k]:.2f}" for k in keys))
    return "\n".join(lines)


def json_ready(obj: typing.Any) -> typing.Any:
    """``obj`` with NaN floats replaced by None, recursively (strict JSON has no NaN)."""
    if isinstance(obj, float) and np.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


def write_json(summary: dict[str, typing.Any], path: str | os.PathLike[str]) -> None:
    """Write ``summary`` as JSON (NaN written as ``null``), under a temporary name first then renamed."""
    write_json_atomic(os.fspath(path), json_ready(summary), indent=2, sort_keys=False)
