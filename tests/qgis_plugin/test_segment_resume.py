"""The Segment dialog and unfinished runs, headless, with the real engine subprocess (the project's .venv).

QGIS closing mid-run (the plugin's shutdown: the engine is cancelled and its finished rows kept), then a new dialog
on the same output offers Resume, and resuming completes with the labels of an uninterrupted run. A plain Cancel
discards the unfinished run instead.

"Mid-run" does not race a timer (the tiny network finishes 1024 rows in a second on a quiet machine): the engine holds
before its third journal write (created, first chunk listed, then the second chunk: ``RSP_ENGINE_HOLD_AT``,
:mod:`engine.faults`) until it is asked to stop, so the stop always lands after the first chunk is durable and before
the last rows are computed. (Counting journal writes, not tile writes: how many rasters a chunk holds depends on the
outputs asked for.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_test_support import ROOT, wait_until
from qgis.core import QgsProject, QgsRasterLayer

import qgis_plugin.model_catalog as model_catalog
from qgis_plugin.parameters import ExtentMode


def tall_raster(path: Path, height: int = 1024, width: int = 256) -> Path:
    """Real Potsdam pixels stacked to ``height`` rows, 0.5 m, EPSG:32633 (the model's GSD: no resampling)."""
    from tests.engine.conftest import potsdam_pixels, write_geotiff

    write_geotiff(str(path), potsdam_pixels(height, width), 32633, options=("TILED=YES", "COMPRESS=DEFLATE"))
    return path


@pytest.fixture
def setup(qgis_iface, qgis_new_project, tmp_path, real_model, venv_interpreter, monkeypatch):
    folder = tmp_path / "profile_models"
    folder.mkdir()
    shutil.copy(real_model, folder / real_model.name)
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: folder)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [])
    (tmp_path / "in").mkdir()
    raster = tall_raster(tmp_path / "in" / "tall.tif")
    layer = QgsRasterLayer(str(raster), "tall", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    dialogs = []

    def new_dialog():  # type: ignore[no-untyped-def]
        from qgis_plugin.segment_dialog import SegmentDialog

        dlg = SegmentDialog(qgis_iface)
        dlg.layer_combo.setLayer(layer)
        dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData(ExtentMode.WHOLE_LAYER.value))
        dlg.vector_check.setChecked(True)
        dlg.confidence_check.setChecked(False)
        dlg.overwrite_check.setChecked(False)
        dlg.device_combo.setCurrentText("cpu")
        dlg.batch_spin.setValue(4)
        dialogs.append(dlg)
        return dlg

    yield new_dialog, raster
    for dlg in dialogs:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()
    QgsProject.instance().removeAllMapLayers()


def stop_mid_run(dialog, how: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Run, wait until the first chunk is durable (the engine then holds before the second), and stop the run."""
    from engine.faults import HOLD_ENV

    monkeypatch.setenv(HOLD_ENV, "journal_write:3")
    assert dialog.run() is True
    monkeypatch.delenv(HOLD_ENV)
    assert wait_until(lambda: (dialog.unfinished_run() or {}).get("rows_done") or dialog.runner is None, 180)
    assert dialog.runner is not None, "the run ended before it could be stopped"
    dialog.close()  # closing only hides the dialog: the run goes on
    assert dialog.runner is not None and dialog.runner.is_running()
    if how == "qgis closes":
        dialog.shutdown()
    else:
        dialog.cancel()
    assert wait_until(lambda: dialog.runner is None, 60)


def test_qgis_closing_mid_run_then_resume_completes(setup, tmp_path, monkeypatch) -> None:
    new_dialog, _raster = setup
    dialog = new_dialog()
    outputs = [dialog.raster_out.filePath(), dialog.vector_out.filePath()]
    assert not dialog.resume_button.isVisible() and dialog.unfinished_run() is None
    stop_mid_run(dialog, "qgis closes", monkeypatch)
    assert not any(os.path.exists(p) for p in outputs)  # nothing under the requested names

    reopened = new_dialog()
    reopened.show()
    assert reopened.raster_out.filePath() == outputs[0]
    unfinished = reopened.unfinished_run()
    assert unfinished is not None and 0 < unfinished["fraction"] < 1
    assert reopened.resume_button.isVisible() and reopened.resume_button.isEnabled()
    assert "% done" in reopened.resume_button.text()
    assert reopened.resume() is True
    assert wait_until(lambda: reopened.runner is None, 180)
    assert reopened.status_label.text().startswith("Done"), reopened.status_label.text()
    assert all(os.path.exists(p) for p in outputs)
    assert not reopened.resume_button.isVisible()
    assert not [n for n in os.listdir(os.path.dirname(outputs[0])) if n.startswith(".")]  # no leftovers

    # the labels of an uninterrupted run of the same options (the engine CLI, fresh)
    reference = tmp_path / "reference.tif"
    args = reopened._run_params.engine_args()
    args[args.index("--output") + 1] = str(reference)
    del args[args.index("--vector") : args.index("--vector") + 6]  # --vector, --min-area, --simplify with values
    args.remove("--resume")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "engine", *args], check=True, capture_output=True, env=env)
    from osgeo import gdal

    a, b = (gdal.Open(str(p)).ReadAsArray() for p in (reference, outputs[0]))
    np.testing.assert_array_equal(a, b)


def test_cancel_discards_the_unfinished_run(setup, monkeypatch) -> None:
    new_dialog, _raster = setup
    dialog = new_dialog()
    stop_mid_run(dialog, "cancel", monkeypatch)
    assert dialog.unfinished_run() is None and not dialog.resume_button.isVisible()
    folder = os.path.dirname(dialog.raster_out.filePath())
    assert sorted(os.listdir(folder)) == ["tall.tif"]


def test_a_failure_that_kept_rows_says_resume_in_the_dialog_words(setup) -> None:
    from engine.journal import RESUME_ADVICE

    new_dialog, _raster = setup
    dialog = new_dialog()
    dialog._on_failed("writing the output failed", f"free disk space; the finished rows (256 of 1024) are kept: "
                      f"{RESUME_ADVICE}")  # fmt: skip
    text = dialog.status_label.text()
    assert "click Resume to continue, or Run to start afresh" in text and "--resume" not in text
