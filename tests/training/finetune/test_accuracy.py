"""``python -m training accuracy`` against an independent numpy computation on the real Potsdam labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from finetune_support import LABELS_TIF, NAMES, class_raster, label_array
from osgeo import gdal

from training.__main__ import main
from training.finetune.accuracy import accuracy


def independent(pred, ref, k):
    """OA, kappa, mIoU (×100) by the textbook formulas, straight from the arrays."""
    keep = (ref != 255) & (pred != 255)
    p, r = pred[keep].astype(int), ref[keep].astype(int)
    oa = (p == r).mean()
    pe = sum((r == c).mean() * (p == c).mean() for c in range(k))
    ious = [((p == c) & (r == c)).sum() / ((p == c) | (r == c)).sum() for c in range(k) if ((p == c) | (r == c)).any()]
    return 100 * oa, 100 * (oa - pe) / (1 - pe), 100 * np.mean(ious)


def test_perfect_prediction_scores_100(tmp_path, potsdam_polygons):
    pred = class_raster(tmp_path / "pred.tif", label_array(), NAMES[:5])
    report = accuracy(pred, potsdam_polygons, "class")
    assert report["OA"] == 100.0 and report["kappa"] == 100.0 and report["mIoU"] == 100.0
    assert report["pixels"] == int((label_array() != 255).sum())


def test_metrics_equal_an_independent_computation(tmp_path, potsdam_polygons):
    truth = label_array()
    wrong = truth.copy()
    wrong[:200, :300] = np.where(truth[:200, :300] == 255, 255, 3)  # a block called "tree"
    wrong[400:, 100:] = np.where(truth[400:, 100:] == 1, 0, wrong[400:, 100:])  # buildings called impervious
    wrong[300:310] = 255  # nodata rows are not compared
    pred = class_raster(tmp_path / "pred.tif", wrong, NAMES[:5])
    report = accuracy(pred, potsdam_polygons, "class", output=str(tmp_path / "report.json"))
    oa, kappa, miou = independent(wrong, truth, 5)
    assert report["OA"] == pytest.approx(oa, abs=0.006)
    assert report["kappa"] == pytest.approx(kappa, abs=0.006)
    assert report["mIoU"] == pytest.approx(miou, abs=0.006)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert {"OA", "kappa", "mIoU", "mF1", "per_class", "confusion_matrix"} <= set(saved)
    assert np.asarray(saved["confusion_matrix"]).sum() == report["pixels"]


def test_classes_matched_by_name_not_position(tmp_path, potsdam_polygons):
    # the same labels, but the prediction lists its classes in another order
    order = (3, 0, 4, 1, 2)  # new id -> old id
    truth = label_array()
    remapped = np.full_like(truth, 255)
    for new, old in enumerate(order):
        remapped[truth == old] = new
    pred = class_raster(tmp_path / "pred.tif", remapped, [NAMES[o] for o in order])
    assert accuracy(pred, potsdam_polygons, "class")["OA"] == 100.0


def test_integer_reference_raster_against_named_prediction(tmp_path):
    pred = class_raster(tmp_path / "pred.tif", label_array(), NAMES[:5])
    report = accuracy(pred, LABELS_TIF)  # values 0..4, no names: taken as class ids
    assert report["OA"] == 100.0 and report["class_names"] == list(NAMES[:5])


def test_cli_prints_table_and_json_and_refuses_disjoint_inputs(tmp_path, capsys, potsdam_polygons):
    pred = class_raster(tmp_path / "pred.tif", label_array(), NAMES[:5])
    out = tmp_path / "acc.json"
    code = main(["accuracy", "--prediction", pred, "--reference", potsdam_polygons, "--class-field", "class",
                 "--output", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and "kappa 100.00" in captured.err
    done = json.loads(captured.out.splitlines()[-1])
    assert done["event"] == "done" and done["OA"] == 100.0 and out.is_file()
    shifted = tmp_path / "far.tif"
    gdal.Translate(str(shifted), pred, outputBounds=[0, 100, 25.6, 74.4])
    code = main(["accuracy", "--prediction", str(shifted), "--reference", potsdam_polygons, "--class-field", "class"])
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 1 and event["event"] == "error" and "do not overlap" in event["message"]
