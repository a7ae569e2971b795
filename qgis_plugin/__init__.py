"""RSP Segmentation QGIS plugin: segment a raster layer with an RSP model file, from a dialog or from Processing.

``classFactory`` stays tiny: it imports only the plugin class (Qt and PyQGIS), never torch, numpy or the engine's
network code, so QGIS start-up does not pay for them. Inference runs in a separate Python process (see
:mod:`.engine_runner`).
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """Return the plugin instance QGIS calls ``initGui``/``unload`` on."""
    from .plugin import RspSegmentationPlugin

    return RspSegmentationPlugin(iface)
