"""The "Segment several rasters" dialog, headless, with the real engine: ticked layers and a folder in one run, each
result added to the project as it finishes, a broken raster reported and skipped, and the refusals."""

from __future__ import annotations

import json
import shutil

import pytest
from osgeo import gdal
from plugin_test_support import DATA, wait_until
from qgis.core import QgsProject, QgsRasterLayer

import qgis_plugin.model_catalog as model_catalog
from qgis_plugin.batch_parameters import RASTER_EXTENSIONS, BatchParameters

SWISSIMAGE = DATA / "swissimage" / "lausanne_1091-322_00_big.tif"


@pytest.fixture
def batch_dialog(qgis_iface, qgis_new_project, venv_interpreter, real_model, tmp_path, monkeypatch):
    from qgis_plugin.batch_dialog import BatchDialog

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(real_model, models / real_model.name)
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: models)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [])
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(2):  # two layers in the project, two rasters in a folder, and a broken one there
        gdal.Translate(str(tmp_path / f"layer_{i}.tif"), str(SWISSIMAGE), srcWin=[i * 96, 0, 96, 80])
        gdal.Translate(str(folder / f"folder_{i}.tif"), str(SWISSIMAGE), srcWin=[i * 96, 200, 96, 80])
        QgsProject.instance().addMapLayer(QgsRasterLayer(str(tmp_path / f"layer_{i}.tif"), f"layer_{i}", "gdal"))
    (folder / "broken.tif").write_bytes(b"II*\x00 truncated")
    dlg = BatchDialog(qgis_iface)
    out = tmp_path / "out"
    out.mkdir()
    dlg.output_dir.setFilePath(str(out))
    yield dlg, folder, out
    dlg.close()
    dlg.deleteLater()
    QgsProject.instance().removeAllMapLayers()


def test_layers_and_folder_each_result_added_failure_reported(batch_dialog) -> None:
    dlg, folder, out = batch_dialog
    from qgis.PyQt.QtCore import Qt

    assert dlg.layer_list.count() == 2
    for i in range(2):
        dlg.layer_list.item(i).setCheckState(Qt.Checked)
    dlg.folder_widget.setFilePath(str(folder))
    params = dlg.gather_parameters()
    assert params.problems() == []
    assert params.engine_args()[:1] == ["batch"] and params.engine_args()[-1] == str(folder)
    assert dlg.run()
    assert wait_until(lambda: dlg.runner is None, 180)
    assert sorted(dlg.added) == ["folder_0", "folder_1", "layer_0", "layer_1"]
    assert dlg.failed_inputs == ["broken"]
    assert "1 of 5 inputs failed" in dlg.status_label.text() and "broken.tif" in dlg.status_label.text()
    groups = [g.name() for g in QgsProject.instance().layerTreeRoot().children() if hasattr(g, "findLayers")]
    assert len(groups) == 4 and all(g.endswith("demo_random") for g in groups)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 1}
    ds = gdal.Open(str(out / "layer_1_classes.tif"))
    assert ds.GetGeoTransform() == pytest.approx(gdal.Open(str(folder.parent / "layer_1.tif")).GetGeoTransform())


def test_refusals(batch_dialog, tmp_path) -> None:
    dlg, folder, out = batch_dialog
    problems = dlg.gather_parameters().problems()
    assert problems == ["Tick at least one raster layer, or choose a folder of rasters."]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    dlg.folder_widget.setFilePath(str(empty))
    assert any("holds no rasters" in p for p in dlg.gather_parameters().problems())
    dlg.output_dir.setFilePath(str(tmp_path / "missing"))
    assert any("output folder does not exist" in p for p in dlg.gather_parameters().problems())
    bad = BatchParameters(inputs=(str(folder),), model_path="", output_dir=str(out), gsd="fine")
    assert any("GSD must be" in p for p in bad.problems())


def test_raster_extensions_follow_the_engine() -> None:
    from engine.batch import RASTER_EXTENSIONS as ENGINE_EXTENSIONS

    assert RASTER_EXTENSIONS == ENGINE_EXTENSIONS
