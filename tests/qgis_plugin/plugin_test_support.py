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
