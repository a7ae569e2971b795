"""Processing provider "RSP Segmentation" holding the algorithms "Segment raster with RSP model", "Fine-tune RSP
model", "Compute accuracy" and "Where to label next"."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .plugin_paths import icon_path

PROVIDER_ID = "rspsegmentation"


class RspProcessingProvider(QgsProcessingProvider):
    """The plugin's Processing provider (``rspsegmentation``)."""

    def id(self) -> str:
        """The provider id that prefixes algorithm ids."""
        return PROVIDER_ID

    def name(self) -> str:
        """The name shown in the Processing toolbox."""
        return "RSP Segmentation"

    def icon(self) -> QIcon:
        """The plugin icon."""
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:
        """Add the provider's algorithms."""
        from .processing_algorithm import SegmentRasterAlgorithm
        from .processing_suggest import SuggestAlgorithm
        from .processing_training import AccuracyAlgorithm, FinetuneAlgorithm

        self.addAlgorithm(SegmentRasterAlgorithm())
        self.addAlgorithm(FinetuneAlgorithm())
        self.addAlgorithm(AccuracyAlgorithm())
        self.addAlgorithm(SuggestAlgorithm())
