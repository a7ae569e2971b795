"""Constants and helpers shared by the plugin tests (a uniquely named module: tests import it by name)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"
SAMPLE_RASTER = DATA / "georef" / "webodm_orthophoto.tif"  # 212×212 RGBA drone ortho, EPSG:32615
CLASS_NAMES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")
CLASS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
SEED = 0


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Run the Qt event loop until ``predicate()`` or the timeout; return the predicate's last value."""
    from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


POTSDAM_RASTER = ROOT / "resources" / "samples" / "potsdam_2_10_rgb.tif"  # 512×512 RGB, 5 cm, EPSG:32633
POTSDAM_LABELS = ROOT / "resources" / "samples" / "potsdam_2_10_labels.tif"  # its classes 0..4, 255 unlabelled
DEMO_MODEL = ROOT / "resources" / "models" / "demo_lite_potsdam.rspmodel"
_FINETUNE_FIXTURES = ROOT / "tests" / "training" / "finetune" / "finetune_support.py"


def polygons_from_raster(tif: str, gpkg: str, **kwargs: object) -> str:
    """Polygons traced from a class raster (string field ``class`` with the Potsdam class names).

    The fine-tuning tests' own helper (``tests/training/finetune/finetune_support.py``), loaded from its file so both
    test folders train on the same labels.
    """
    import importlib.util

    module = sys.modules.get("finetune_test_fixtures")
    if module is None:
        spec = importlib.util.spec_from_file_location("finetune_test_fixtures", _FINETUNE_FIXTURES)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["finetune_test_fixtures"] = module
    return module.polygons_from_raster(str(tif), str(gpkg), **kwargs)
