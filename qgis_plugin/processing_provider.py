"""Processing provider "RSP Segmentation" holding the algorithm "Segment raster with RSP model"."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .plugin_paths import icon_path

PROVIDER_ID = "rspsegmentation"


class RspProcessingProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "RSP Segmentation"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:
        from .processing_algorithm import SegmentRasterAlgorithm

        self.addAlgorithm(SegmentRasterAlgorithm())
