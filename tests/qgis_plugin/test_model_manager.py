"""Model manager: listing with metadata, import through an engine subprocess, removal."""

from __future__ import annotations

import shutil
import sys
import textwrap

import pytest
from plugin_test_support import wait_until
from qgis.PyQt.QtWidgets import QMessageBox

import qgis_plugin.model_catalog as model_catalog
import qgis_plugin.plugin_settings as plugin_settings
from qgis_plugin.model_manager_dialog import ModelManagerDialog

# Stands in for `python -m engine import SRC --output DEST` (engine.importer has not landed yet): copies a model file.
FAKE_IMPORTER = textwrap.dedent(
    """
    import shutil, sys
    assert sys.argv[1] == "import"
    src, dest = sys.argv[2], sys.argv[sys.argv.index("--output") + 1]
    if not src.endswith(".rspmodel"):
        print("not a checkpoint I know", file=sys.stderr)
        sys.exit(1)
    shutil.copy(src, dest)
    """
)


@pytest.fixture
def manager(qgis_app, tmp_path, monkeypatch, fake_engine):
    user = tmp_path / "rsp_models"
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: user)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [tmp_path / "bundled"])
    monkeypatch.setattr(plugin_settings, "interpreter", lambda: sys.executable)
    monkeypatch.setattr(ModelManagerDialog, "engine_module", fake_engine(FAKE_IMPORTER))
    warnings: list[str] = []
    monkeypatch.setattr("qgis_plugin.model_manager_dialog.QMessageBox.warning", lambda *a: warnings.append(a[2]))
    dialog = ModelManagerDialog()
    dialog.warnings = warnings
    yield dialog
    dialog.deleteLater()


def test_import_lists_and_removes(manager, metadata_model, tmp_path, monkeypatch) -> None:
    assert manager.list.count() == 0
    assert "No models yet" in manager.info.text()
    runner = manager.start_import(str(metadata_model))
    assert wait_until(lambda: manager.runner is None, 30), runner
    assert manager.list.count() == 1
    assert manager.list.currentItem().text() == "potsdam_demo"
    assert "building" in manager.info.text() and "tile 64 px" in manager.info.text()
    assert manager.remove_button.isEnabled()
    monkeypatch.setattr("qgis_plugin.model_manager_dialog.QMessageBox.question", lambda *a: QMessageBox.Yes)
    manager.remove_current()
    assert manager.list.count() == 0
    assert not (tmp_path / "rsp_models" / "potsdam_demo.rspmodel").exists()


def test_failed_import_is_reported(manager, tmp_path) -> None:
    bogus = tmp_path / "upernet.pth"
    bogus.write_bytes(b"\x80\x02}q\x00.")
    manager.start_import(str(bogus))
    assert wait_until(lambda: manager.runner is None, 30)
    assert manager.warnings and "not a checkpoint I know" in manager.warnings[0]
    assert manager.list.count() == 0


def test_bundled_models_cannot_be_removed(manager, metadata_model, tmp_path) -> None:
    (tmp_path / "bundled").mkdir()
    shutil.copy(metadata_model, tmp_path / "bundled" / "demo.rspmodel")
    manager.reload()
    assert manager.list.currentItem().text() == "demo  (bundled)"
    assert not manager.remove_button.isEnabled()
