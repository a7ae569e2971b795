"""Check environment (real self-check in the project venv) and the model catalog."""

from __future__ import annotations

import json
import shutil

import pytest

from qgis_plugin.engine_locator import project_venv_python
from qgis_plugin.environment_check import check_environment, report_from_output
from qgis_plugin.model_catalog import ModelRemoveError, list_models, remove_model


def test_check_environment_in_project_venv(qgis_app) -> None:
    venv = project_venv_python()
    if venv is None:
        pytest.skip("no project .venv")
    report = check_environment(str(venv))
    assert report.ok, report.as_html()
    assert report.versions["torch"] and report.versions["timm"] and report.versions["gdal"]
    assert "ready" in report.as_html()


def test_check_environment_missing_interpreter(qgis_app, tmp_path) -> None:
    report = check_environment(str(tmp_path / "python-nowhere"))
    assert not report.ok
    assert "Cannot start" in report.problem
    assert "venv" in report.fix


def test_missing_packages_give_the_fix_command() -> None:
    stdout = "noise\n" + json.dumps({"python": "3.11.2", "torch": None, "timm": None, "missing": ["torch", "timm"]})
    report = report_from_output("/usr/bin/python3", 1, stdout, "")
    assert not report.ok
    assert report.missing == ["torch", "timm"]
    assert report.fix.startswith("/usr/bin/python3 -m pip install torch timm")
    assert "<b>missing</b>" in report.as_html()


def test_catalog_lists_user_and_bundled_models_and_reports_broken_files(qgis_app, tmp_path, metadata_model) -> None:
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    user.mkdir()
    bundled.mkdir()
    shutil.copy(metadata_model, user / "mine.rspmodel")
    shutil.copy(metadata_model, bundled / "demo.rspmodel")
    (user / "broken.rspmodel").write_bytes(b"not a model")
    (user / ".mine.tmp-123.rspmodel").write_bytes(b"half written")  # engine.atomic's name while writing: hidden
    entries = list_models(user, [bundled, tmp_path / "absent"])
    assert [(e.name, e.bundled) for e in entries] == [("broken", False), ("mine", False), ("demo", True)]
    assert entries[0].info is None and "model file" in entries[0].error
    assert entries[1].info.class_names[1] == "building"
    with pytest.raises(ModelRemoveError):
        remove_model(entries[2], user)
    remove_model(entries[1], user)
    assert not (user / "mine.rspmodel").exists()
    assert list_models(tmp_path / "none", []) == []


def test_plugin_starts_fine_tuning_where_the_command_line_does(monkeypatch, tmp_path, metadata_model) -> None:
    """With no start chosen, the dialog/Processing default and `training finetune`'s default are the same model."""
    from qgis_plugin import model_catalog
    from training.finetune.start import DEFAULT_START_MODELS

    assert [f"{n}{model_catalog.MODEL_SUFFIX}" for n in model_catalog.START_MODEL_NAMES] == list(DEFAULT_START_MODELS)
    first, second = (tmp_path / "first", tmp_path / "second")
    first.mkdir(), second.mkdir()
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [first, second])
    assert model_catalog.bundled_start_model() is None
    fallback = second / f"{model_catalog.START_MODEL_NAMES[-1]}{model_catalog.MODEL_SUFFIX}"
    shutil.copy(metadata_model, fallback)
    assert model_catalog.bundled_start_model() == str(fallback)
    best = second / f"{model_catalog.START_MODEL_NAMES[0]}{model_catalog.MODEL_SUFFIX}"
    shutil.copy(metadata_model, best)  # the better start wins, in whichever folder
    assert model_catalog.bundled_start_model() == str(best)
