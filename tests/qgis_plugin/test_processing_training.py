"""Processing "Fine-tune RSP model" and "Compute accuracy" through ``processing.run``, with the real training package.

The accuracy expectation is computed here with numpy from the label raster (an independent computation): a copy of
the labels with two blocks relabelled is compared with polygons traced from the labels, and with the label raster
itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from plugin_test_support import (
    DEMO_MODEL,
    POTSDAM_LABELS,
    POTSDAM_RASTER,
    polygons_from_raster,
    potsdam_class_raster,
    style_by_categories,
)
from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

from qgis_plugin.model_catalog import bundled_start_model

NAMES = ("impervious_surface", "building", "low_vegetation", "tree", "car")


@pytest.fixture(scope="module")
def traced_labels(tmp_path_factory) -> str:
    return polygons_from_raster(POTSDAM_LABELS, tmp_path_factory.mktemp("traced") / "labels.gpkg")


def perturbed_prediction(path) -> tuple[str, float]:
    """The label raster with two blocks relabelled, named like an engine output; and its OA (×100) by numpy."""
    src = gdal.Open(str(POTSDAM_LABELS))  # keep the dataset alive while its band is read
    truth = src.GetRasterBand(1).ReadAsArray()
    wrong = truth.copy()
    wrong[:150, :200] = np.where(truth[:150, :200] == 255, 255, 3)  # a block called "tree"
    wrong[400:, 250:] = np.where(truth[400:, 250:] == 1, 0, wrong[400:, 250:])  # buildings called impervious
    labelled = truth != 255
    return potsdam_class_raster(path, wrong, NAMES), 100.0 * float((wrong[labelled] == truth[labelled]).mean())


def test_algorithms_are_registered(provider) -> None:
    registry = QgsApplication.processingRegistry()
    assert registry.algorithmById("rspsegmentation:finetune").displayName() == "Fine-tune RSP model"
    assert registry.algorithmById("rspsegmentation:accuracy").displayName() == "Compute accuracy"


def test_finetune_from_a_styled_labels_layer(provider, traced_labels, tmp_path) -> None:
    import processing

    from engine.model_file import read_model_info

    labels = QgsVectorLayer(traced_labels, "labels", "ogr")
    styled = {"building": ("Houses", (200, 30, 30)), "impervious_surface": ("Roads", (120, 120, 120))}
    values = ("building", "impervious_surface", "tree", "low_vegetation", "car")
    style_by_categories(labels, "class", [(v, *styled.get(v, (v, (10, 120, 10)))) for v in values])
    QgsProject.instance().addMapLayer(labels)
    out = tmp_path / "models" / "mine.rspmodel"
    out.parent.mkdir()
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    result = processing.run(
        "rspsegmentation:finetune",
        {
            "INPUT": str(POTSDAM_RASTER),
            "LABELS": labels.id(),
            "CLASS_FIELD": "class",
            "ITERATIONS": 2,
            "DEVICE": 0,
            "BATCH_SIZE": 2,
            "TILE": 128,
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert result["OUTPUT"] == str(out) and out.is_file()
    info = read_model_info(out)
    assert info.class_names == ("Houses", "Roads", "tree", "low_vegetation", "car")  # the style's order and names
    assert info.colors[:2] == ((200, 30, 30), (120, 120, 120))
    assert {k: result[k.upper()] for k in ("OA", "kappa", "mIoU", "mF1")} == info.metrics
    assert result["REPORT"].endswith("mine_finetune/report.json")
    assert progress and max(progress) == 100.0
    assert info.provenance["start"] == Path(bundled_start_model()).name  # no start given: the bundled start model


def test_finetune_refuses_two_starts(provider, traced_labels, tmp_path) -> None:
    import processing

    ckpt = tmp_path / "rsp-resnet-50-ckpt.pth"
    ckpt.write_bytes(b"x")
    with pytest.raises(QgsProcessingException, match="not both"):
        processing.run(
            "rspsegmentation:finetune",
            {
                "INPUT": str(POTSDAM_RASTER),
                "LABELS": traced_labels,
                "CLASS_FIELD": "class",
                "MODEL": str(DEMO_MODEL),
                "BACKBONE": str(ckpt),
                "OUTPUT": str(tmp_path / "x.rspmodel"),
            },
        )
    assert not (tmp_path / "x.rspmodel").exists()


def test_accuracy_against_polygons_and_a_class_raster(provider, traced_labels, tmp_path) -> None:
    import processing

    prediction, oa = perturbed_prediction(tmp_path / "prediction.tif")
    report = tmp_path / "report.json"
    result = processing.run(
        "rspsegmentation:accuracy",
        {"PREDICTION": prediction, "REFERENCE": traced_labels, "CLASS_FIELD": "class", "OUTPUT": str(report)},
    )
    assert result["OA"] == pytest.approx(oa, abs=0.006)
    assert 0 < result["KAPPA"] < result["OA"] < 100 and result["MIOU"] < 100 and result["MF1"] < 100
    assert result["OUTPUT"] == str(report) and report.is_file()
    raster = processing.run(
        "rspsegmentation:accuracy",
        {"PREDICTION": prediction, "REFERENCE": str(POTSDAM_LABELS), "OUTPUT": "TEMPORARY_OUTPUT"},
    )  # integer codes in the reference raster are the prediction's class ids
    assert raster["OA"] == pytest.approx(oa, abs=0.006)
