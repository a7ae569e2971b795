"""Fixtures for the plugin tests: real GeoTIFFs made with GDAL, model files, the project venv as the engine
interpreter, the plugin's Processing provider, and an event-loop wait helper."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from plugin_test_support import CLASS_COLORS, CLASS_NAMES, DATA, ROOT, SAMPLE_RASTER, SEED, wait_until  # noqa: F401


def model_info(arch: str = "upernet_resnet18_demo", **overrides):
    from engine.model_file import ModelInfo

    fields = dict(
        arch=arch,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        colors=CLASS_COLORS,
        gsd_m=0.5,
        tile_size=64,
        stride=48,
        dataset="test fixture",
        description="seeded random weights: for tests only",
    )
    fields.update(overrides)
    return ModelInfo(**fields)


@pytest.fixture
def metadata_model(tmp_path) -> Path:
    """A model file whose metadata is real but whose one tensor is a placeholder: for UI/styling tests only."""
    import torch

    from engine.model_file import save_model_file

    path = tmp_path / "potsdam_demo.rspmodel"
    save_model_file(path, {"decode_head.conv_seg.bias": torch.zeros(len(CLASS_NAMES))}, model_info())
    return path


LIGHT_ARCH = "lite_resnet"  # engine.models' small demo network (not an RSP model)


def _light_arch() -> str | None:
    try:
        from engine.models import ARCHS
    except Exception:
        return None
    return LIGHT_ARCH if LIGHT_ARCH in ARCHS else None


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    """A runnable model file: the light demo arch with seeded random weights (skips until engine.models lands)."""
    arch = _light_arch()
    if arch is None:
        pytest.skip("engine.models has no light demo arch yet")
    import torch

    from engine.model_file import save_model_file
    from engine.models import build_segmentor

    torch.manual_seed(SEED)
    model = build_segmentor(arch, len(CLASS_NAMES), aux_head=False)
    path = tmp_path_factory.mktemp("models") / "demo_random.rspmodel"
    save_model_file(path, model.state_dict(), model_info(arch))
    return path


@pytest.fixture
def venv_interpreter(monkeypatch) -> str:
    """The project's ``.venv`` python as the plugin's engine interpreter (skips without one)."""
    import qgis_plugin.plugin_settings as plugin_settings
    from qgis_plugin.engine_locator import project_venv_python

    venv = project_venv_python()
    if venv is None:
        pytest.skip("no .venv next to the repository's engine/ (run make setup)")
    monkeypatch.setattr(plugin_settings, "interpreter", lambda: str(venv))
    return str(venv)


@pytest.fixture
def provider(qgis_processing, venv_interpreter):
    """The plugin's Processing provider, registered for the test; the project's layers are removed afterwards."""
    from qgis.core import QgsApplication, QgsProject

    from qgis_plugin.processing_provider import RspProcessingProvider

    provider = RspProcessingProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def sample_raster(tmp_path) -> Path:
    """A copy of the real 212×212 RGBA drone orthophoto (EPSG:32615) in a writable folder."""
    target = tmp_path / "input" / "ortho.tif"
    target.parent.mkdir()
    shutil.copy(SAMPLE_RASTER, target)
    return target


@pytest.fixture
def class_raster(tmp_path) -> Path:
    """A 40×30 uint8 class-id GeoTIFF (EPSG:32633, 1 m pixels) with classes 0..5 in vertical stripes."""
    from osgeo import gdal, osr

    path = tmp_path / "classes.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 40, 30, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 1.0, 0.0, 5000030.0, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    data = np.repeat((np.arange(40) // 7).clip(0, 5)[None, :], 30, axis=0).astype(np.uint8)
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    return path


@pytest.fixture
def fake_engine(tmp_path, monkeypatch) -> Callable[[str], str]:
    """Write a real Python package ``fake_engine_<n>`` whose ``__main__`` is ``body``; return its module name.

    The runner's real QProcess path runs it as ``<python> -m <module>``, found through ``PYTHONPATH``.
    """
    counter = iter(range(1000))
    folder = tmp_path / "fake_engines"
    folder.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(folder))

    def make(body: str) -> str:
        name = f"fake_engine_{next(counter)}"
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text("", encoding="utf-8")
        (folder / name / "__main__.py").write_text(body, encoding="utf-8")
        return name

    return make


os.environ.setdefault("HF_HUB_OFFLINE", "1")
