"""The Train model dialog, headless (pytest-qgis iface), with the real training package in the engine interpreter.

The labels are polygons traced from the bundled Potsdam sample's label raster (the fine-tuning tests' helper); the
runs are tiny (2 iterations of 128-pixel chips on the CPU).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from plugin_test_support import (
    ANALYST_STYLE,
    DEMO_MODEL,
    POTSDAM_LABELS,
    POTSDAM_RASTER,
    polygons_from_raster,
    style_by_categories,
    wait_until,
)
from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRasterLayer, QgsVectorLayer

import qgis_plugin
import qgis_plugin.model_catalog as model_catalog
from qgis_plugin.parameters import InvalidParametersError

RUN_TIMEOUT_S = 300
TINY = {"iterations": 2, "tile": 128, "batch": 2}


@pytest.fixture(scope="module")
def traced_labels(tmp_path_factory) -> Path:
    return Path(polygons_from_raster(POTSDAM_LABELS, tmp_path_factory.mktemp("traced") / "labels.gpkg"))


@pytest.fixture
def models_dir(tmp_path, monkeypatch, venv_interpreter) -> Path:
    folder = tmp_path / "profile" / "rsp_models"
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: folder)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [DEMO_MODEL.parent])
    return folder


@pytest.fixture
def layers(qgis_new_project, tmp_path, traced_labels):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(POTSDAM_RASTER, data / "potsdam_2_10.tif")
    shutil.copy(traced_labels, data / "labels.gpkg")
    raster = QgsRasterLayer(str(data / "potsdam_2_10.tif"), "potsdam_2_10", "gdal")
    labels = QgsVectorLayer(str(data / "labels.gpkg"), "my labels", "ogr")
    assert raster.isValid() and labels.isValid()
    QgsProject.instance().addMapLayers([raster, labels])
    yield raster, labels
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def dialog(qgis_iface, models_dir, layers):
    from qgis_plugin.train_dialog import TrainDialog

    dlg = TrainDialog(qgis_iface)
    configure(dlg, *layers)
    yield dlg
    dlg.shutdown()
    dlg.close()
    dlg.deleteLater()


def configure(dlg, raster, labels, iterations=TINY["iterations"]) -> None:
    dlg.raster_combo.setLayer(raster)
    dlg.labels_combo.setLayer(labels)
    dlg.field_combo.setField("class")
    dlg.iterations_spin.setValue(iterations)
    dlg.tile_spin.setValue(TINY["tile"])
    dlg.batch_spin.setValue(TINY["batch"])
    dlg.device_combo.setCurrentText("cpu")


def choose_one_building_labels(dlg, name: str, extent) -> QgsVectorLayer:
    """A memory layer (EPSG:32633) with one ``building`` polygon covering ``extent``, chosen as the dialog's labels."""
    memory = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class:string", name, "memory")
    feature = QgsFeature(memory.fields())
    feature.setGeometry(QgsGeometry.fromRect(extent))
    feature["class"] = "building"
    memory.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(memory)
    dlg.labels_combo.setLayer(memory)
    dlg.field_combo.setField("class")
    return memory


def test_defaults(dialog, models_dir) -> None:
    assert dialog.model_combo.currentText() == model_catalog.START_MODEL_NAMES[0]  # the bundled start model
    dialog.iterations_spin.setValue(300)
    dialog._auto_iterations = None
    dialog._on_start_changed()
    assert dialog.iterations_spin.value() == 300  # the demo network's default
    dialog.start_combo.setCurrentIndex(1)  # an RSP backbone file
    assert dialog.iterations_spin.value() == 2000 and dialog.arch_combo.isEnabled()
    dialog.start_combo.setCurrentIndex(0)
    assert dialog.name_edit.text() == "potsdam_2_10_finetuned"
    assert dialog.output_model_path() == str(models_dir / "potsdam_2_10_finetuned.rspmodel")
    assert "_finetune" in dialog.path_label.text()
    assert not dialog.resume_check.isEnabled() and not dialog.overwrite_check.isEnabled()
    assert "values of class" in dialog.classes_label.text()


def test_classes_json_from_the_categorised_style(dialog, layers) -> None:
    _raster, labels = layers
    style_by_categories(labels, "class", ANALYST_STYLE)  # the dialog follows the layer's style
    assert "Roads&nbsp;and&nbsp;squares" in dialog.classes_label.text()
    assert "rgb(200,30,30)" in dialog.classes_label.text()
    params = dialog.prepare_run()
    assert params.labels_path == labels.source().split("|")[0]  # a plain file: read as it is
    assert params.classes_json == str(Path(params.work_folder) / "classes.json")
    assert Path(params.work_folder) == Path(params.output_model).with_name("potsdam_2_10_finetuned_finetune")
    written = json.loads(Path(params.classes_json).read_text())
    assert written == [{"name": label, "color": list(rgb), "value": value} for value, label, rgb in ANALYST_STYLE]
    args = params.finetune_args()
    assert args[args.index("--classes") + 1] == params.classes_json
    assert args[args.index("--init") + 1] == model_catalog.bundled_start_model()  # what `training finetune` picks
    assert args[args.index("--iters") + 1] == "2" and args[args.index("--tile") + 1] == "128"


def test_selected_features_and_memory_layers_are_exported(dialog, layers) -> None:
    _raster, labels = layers
    labels.selectByIds(sorted(labels.allFeatureIds())[:7])
    dialog.selected_check.setChecked(True)
    params = dialog.prepare_run()
    assert params.labels_path == str(Path(params.work_folder) / "labels.gpkg")
    exported = QgsVectorLayer(params.labels_path, "exported", "ogr")
    assert exported.featureCount() == 7
    assert "--classes" not in params.finetune_args()  # no categorised style: the field's values

    choose_one_building_labels(dialog, "scratch", labels.extent())
    dialog.selected_check.setChecked(False)
    params = dialog.prepare_run()
    assert params.labels_path == str(Path(params.work_folder) / "labels.gpkg")
    assert QgsVectorLayer(params.labels_path, "exported", "ogr").featureCount() == 1


def test_a_run_that_cannot_start_writes_nothing(dialog, models_dir) -> None:
    dialog.name_edit.setText("demo_lite_potsdam")  # the bundled model's name
    with pytest.raises(InvalidParametersError, match="bundled"):
        dialog.prepare_run()
    dialog.name_edit.setText("bad/name")
    dialog.field_combo.setField("")
    with pytest.raises(InvalidParametersError) as info:
        dialog.prepare_run()
    assert "letters, digits" in str(info.value) and "class field" in str(info.value)
    assert not dialog.run()
    assert "class field" in dialog.status_label.text()
    assert not models_dir.exists()


def test_train_shows_holdout_metrics_lists_the_model_and_offers_to_segment(
    qgis_iface, qgis_processing, models_dir, layers
) -> None:
    raster, labels = layers
    plugin = qgis_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert [a.text() for a in plugin.toolbar.actions()] == ["Segment layer", "Train model"]
        plugin.show_segment_dialog()  # open already: it must list the new model when training ends
        plugin.show_train_dialog()
        dlg = plugin.train_dialog
        configure(dlg, raster, labels)
        progress, statuses = [], []
        assert dlg.run(), dlg.status_label.text()
        dlg.runner.progress.connect(lambda event: progress.append(dlg.status_label.text()))
        dlg.runner.status.connect(statuses.append)
        assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
        assert dlg.trained_model == str(models_dir / "potsdam_2_10_finetuned.rspmodel"), dlg.status_label.text()
        assert progress and progress[-1].startswith("Iteration 4 of 4, loss ")  # 2 iterations, then 2 of the refit
        assert any("held-out" in s for s in statuses)
        results = dlg.results_label.text()
        assert dlg.results_label.isVisibleTo(dlg)
        for text in ("Hold-out accuracy", "OA", "kappa", "mIoU", "mF1", "F1", "building", "impervious_surface"):
            assert text in results, text
        assert "always " in results  # the majority-class row to compare with
        entry = next(e for e in model_catalog.list_models() if e.path == dlg.trained_model)
        assert set(entry.info.metrics) == {"OA", "kappa", "mIoU", "mF1"}
        assert f"{entry.info.metrics['OA']:.1f}" in results
        assert "Hold-out metrics: OA" in model_catalog.format_info_html(entry, brief=True)
        info_html = model_catalog.format_info_html(entry)
        assert "Per-class F1 (hold-out): " in info_html and "impervious_surface" in info_html.split("Per-class F1")[1]
        assert plugin.dialog.model_combo.findData(dlg.trained_model) >= 0  # the Segment dialog lists it
        assert dlg.segment_button.isVisibleTo(dlg) and dlg.segment_button.text() == (
            "Segment potsdam_2_10 with the new model"
        )
        plugin.dialog.layer_combo.setLayer(None)
        dlg.segment_button.click()
        assert plugin.dialog.model_combo.currentData() == dlg.trained_model
        assert plugin.dialog.layer_combo.currentLayer() is raster
        assert "Hold-out metrics" in plugin.dialog.model_info.text()
        assert dlg.overwrite_check.isEnabled() and not dlg.resume_check.isEnabled()
    finally:
        plugin.unload()


def test_cancel_mid_training_writes_no_model_and_offers_resume(dialog, models_dir) -> None:
    dialog.iterations_spin.setValue(300)
    assert dialog.run(), dialog.status_label.text()
    output = Path(dialog._run_params.output_model)
    assert wait_until(lambda: dialog.status_label.text().startswith("Iteration"), RUN_TIMEOUT_S), (
        dialog.status_label.text()
    )
    dialog.cancel()
    assert wait_until(lambda: dialog.runner is None, 30), "training did not stop within 30 s"
    assert dialog.status_label.text().startswith("Cancelled; no model was written.")
    assert not output.exists()
    assert not list(output.parent.glob("*.rspmodel")) and not list(output.parent.glob(".*tmp*"))
    # The training package keeps a checkpoint when the cancel reaches it between two steps (not while it reads a
    # batch): Resume is offered exactly when there is one.
    checkpoint = output.with_name(output.stem + "_finetune") / "latest.pth"
    assert dialog.resume_check.isEnabled() == checkpoint.is_file()


def test_resume_is_offered_for_an_interrupted_run_and_reuses_its_labels_export(dialog, layers) -> None:
    _raster, labels = layers
    labels.selectByIds(sorted(labels.allFeatureIds())[:5])
    dialog.selected_check.setChecked(True)
    first = dialog.prepare_run()  # exports the selection into the work folder
    work = Path(first.work_folder)
    exported = work / "labels.gpkg"
    stamp = exported.stat().st_mtime_ns
    (work / "latest.pth").write_bytes(b"checkpoint")  # what a cancelled run leaves
    (work / "finetune.json").write_text(json.dumps({"labels": [[str(exported), 1, 1]]}))
    dialog.name_edit.setText("other")
    dialog.name_edit.setText(Path(first.output_model).stem)
    assert dialog.resume_check.isEnabled() and dialog.resume_check.isChecked()
    again = dialog.prepare_run()
    assert again.resume and "--resume" in again.finetune_args()
    assert again.labels_path == str(exported) and exported.stat().st_mtime_ns == stamp  # the same file, unchanged
    dialog.resume_check.setChecked(False)
    assert "--resume" not in dialog.gather_parameters().finetune_args()


def test_engine_error_is_one_message_with_a_hint(dialog, layers) -> None:
    raster, _labels = layers
    choose_one_building_labels(dialog, "one class", raster.extent())
    assert dialog.run(), dialog.status_label.text()
    assert wait_until(lambda: dialog.runner is None, RUN_TIMEOUT_S)
    text = dialog.status_label.text()
    assert "1 class" in text and "at least two" in text and "digitise" in text, text
    assert "Traceback" not in text and len(text.splitlines()) == 2
    assert dialog.trained_model is None and not dialog.results_label.isVisibleTo(dialog)
