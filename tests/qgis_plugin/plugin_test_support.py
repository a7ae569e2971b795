"""Constants and helpers shared by the plugin tests (a uniquely named module: tests import it by name)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"
SAMPLE_RASTER = DATA / "georef" / "webodm_orthophoto.tif"  # 212×212 RGBA drone ortho, EPSG:32615
CLASS_NAMES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")
CLASS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
SEED = 0


LayerCategory = tuple[str, str, tuple[int, int, int]]
"""``(value, label, (r, g, b))``: one category of a categorised style."""

# An analyst's categorised style on the labels' ``class`` field: their own names, colours and order (not the values').
ANALYST_STYLE: list[LayerCategory] = [
    ("building", "Houses", (200, 30, 30)),
    ("impervious_surface", "Roads and squares", (120, 120, 120)),
    ("tree", "Trees", (10, 120, 10)),
    ("low_vegetation", "Grass", (150, 230, 100)),
    ("car", "Cars", (250, 200, 0)),
]


def style_by_categories(layer: object, field: str, categories: list[LayerCategory], opacity: float = 1.0) -> None:
    """Give the polygon layer ``layer`` a categorised style on ``field``: one category per entry, in that order."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol, QgsWkbTypes
    from qgis.PyQt.QtGui import QColor

    styled = []
    for value, label, rgb in categories:
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
        symbol.setColor(QColor(*rgb))
        symbol.setOpacity(opacity)
        styled.append(QgsRendererCategory(value, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, styled))


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


def _finetune_support() -> ModuleType:
    """The fine-tuning tests' helpers (``tests/training/finetune/finetune_support.py``), loaded from their file so
    both test folders work on the same labels."""
    import importlib.util

    module = sys.modules.get("finetune_test_fixtures")
    if module is None:
        spec = importlib.util.spec_from_file_location("finetune_test_fixtures", _FINETUNE_FIXTURES)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["finetune_test_fixtures"] = module
    return module


def polygons_from_raster(tif: str, gpkg: str, **kwargs: object) -> str:
    """Polygons traced from a class raster (string field ``class`` with the Potsdam class names)."""
    return _finetune_support().polygons_from_raster(str(tif), str(gpkg), **kwargs)


def potsdam_class_raster(path: Path, data: object, names: tuple[str, ...]) -> str:
    """A GeoTIFF on the Potsdam labels' grid holding the class ids ``data`` (nodata 255) named ``names``."""
    return _finetune_support().class_raster(path, data, names)
