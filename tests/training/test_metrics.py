"""Metrics against hand-computed values on small confusion matrices (mmseg 0.21 definitions, NaN via nanmean)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import ConfusionMatrix, MetricsError, format_table, summarize


def _matrix() -> ConfusionMatrix:
    # label / prediction; 255 ignored. Valid pairs (label, pred): (0,0) (0,1) (1,1) (1,1) (2,0).
    label = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(4, ignore_index=255)  # class 3 absent from labels and predictions
    cm.update(pred, label)
    return cm


def test_confusion_counts_skip_ignored_pixels() -> None:
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[2, 0] = 1
    expected[1, 1] = 2
    np.testing.assert_array_equal(_matrix().counts, expected)


def test_summary_values_by_hand() -> None:
    s = summarize(_matrix().counts, ["a", "b", "c", "absent"])
    # IoU: a 1/(2+2-1), b 2/(3+2-2), c 0/1, absent 0/0 -> NaN; mean over 3 classes.
    assert s["mIoU"] == pytest.approx(round(100 * (1 / 3 + 2 / 3 + 0) / 3, 2))
    # F1: a 0.5, b 2*(2/3*1)/(2/3+1) = 0.8, c precision 0/0 -> NaN, absent NaN.
    assert s["mF1"] == pytest.approx(65.0)
    assert s["aAcc"] == pytest.approx(60.0) and s["OA"] == s["aAcc"]  # 3 correct of 5 valid pixels
    assert s["mPrecision"] == pytest.approx(round(100 * (0.5 + 2 / 3) / 2, 2))
    assert s["mRecall"] == pytest.approx(50.0)  # (0.5 + 1 + 0) / 3
    rows = {r["class"]: r for r in s["per_class"]}
    assert rows["c"]["IoU"] == 0.0 and rows["c"]["F1"] is None and rows["absent"]["IoU"] is None
    assert rows["b"]["F1"] == pytest.approx(80.0) and rows["a"]["pixels"] == 2


def test_potsdam_clutter_is_ignored_and_means_are_over_five_classes() -> None:
    names = ["impervious", "building", "low_veg", "tree", "car", "clutter"]
    cm = ConfusionMatrix(6, ignore_index=5)
    label = np.array([[0, 1, 2, 3, 4, 5, 5]])
    pred = np.array([[0, 1, 2, 3, 0, 4, 0]])  # the clutter pixels are predicted as anything: ignored
    cm.update(pred, label)
    s = summarize(cm.counts, names)
    # IoU: 0 -> 1/(2+1-1)=0.5, 1..3 -> 1, car 0/(0+1)=0; clutter NaN.
    assert s["mIoU"] == pytest.approx(round(100 * (0.5 + 3 + 0) / 5, 2))
    assert s["aAcc"] == pytest.approx(80.0)
    assert s["per_class"][5]["IoU"] is None and math.isnan(summarize(np.zeros((2, 2), np.int64), ["x", "y"])["mIoU"])
    assert "Summary: aAcc 80.00" in format_table(s)


def test_global_accumulation_differs_from_per_image_average() -> None:
    cm = ConfusionMatrix(2, ignore_index=None)
    cm.update(np.array([[0]]), np.array([[0]]))  # image 1: perfect on one pixel
    cm.update(np.array([[1, 1, 1, 0]]), np.array([[0, 0, 0, 0]]))  # image 2: 1 of 4 right
    s = summarize(cm.counts, ["bg", "fg"])
    assert s["aAcc"] == pytest.approx(40.0)  # 2 of 5 pixels, not mean(100, 25)


def test_out_of_range_labels_are_an_error() -> None:
    with pytest.raises(MetricsError, match="label values"):
        ConfusionMatrix(3, ignore_index=255).update(np.array([0, 7]), np.array([0, 7]))
