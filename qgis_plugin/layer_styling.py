"""Add a run's outputs to the project in one group, styled from the model's class names and colours.

- classified raster: :class:`QgsPalettedRasterRenderer`, one entry per class id with the model's colour and name;
- polygons: :class:`QgsCategorizedSymbolRenderer` on ``class_id`` with the same colours and names;
- confidence raster: greyscale ramp (stretch 0..1 for float, 0..255 for uint8-scaled).

Must run on the main thread (it touches the project).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSingleBandGrayRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

CLASS_FIELD = "class_id"
POLYGON_OPACITY = 0.6
OUTLINE_COLOR = "#303030"


class StylingError(Exception):
    """An output could not be loaded as a layer: the file is missing or unreadable; run the segmentation again."""


def paletted_renderer(
    layer: QgsRasterLayer, class_names: Sequence[str], colors: Sequence[tuple[int, int, int]]
) -> QgsPalettedRasterRenderer:
    """A paletted renderer on band 1 with one class per model class (id = index)."""
    classes = [
        QgsPalettedRasterRenderer.Class(class_id, QColor(*color), name)
        for class_id, (name, color) in enumerate(zip(class_names, colors, strict=True))
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def categorized_renderer(
    class_names: Sequence[str], colors: Sequence[tuple[int, int, int]], field: str = CLASS_FIELD
) -> QgsCategorizedSymbolRenderer:
    """Categories on ``field`` (the class id) with the model's colours and class names as labels."""
    categories = []
    for class_id, (name, color) in enumerate(zip(class_names, colors, strict=True)):
        symbol = QgsFillSymbol.createSimple(
            {"color": ",".join(str(v) for v in color) + ",255", "outline_color": OUTLINE_COLOR, "outline_width": "0.1"}
        )
        symbol.setOpacity(POLYGON_OPACITY)
        categories.append(QgsRendererCategory(class_id, symbol, name))
    return QgsCategorizedSymbolRenderer(field, categories)


def greyscale_renderer(layer: QgsRasterLayer) -> QgsSingleBandGrayRenderer:
    """Band 1 in grey, stretched over 0..1 (float confidence) or 0..255 (uint8-scaled confidence)."""
    renderer = QgsSingleBandGrayRenderer(layer.dataProvider(), 1)
    enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(1))
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    is_byte = layer.dataProvider().dataType(1) in (1,)  # Qgis.DataType.Byte
    enhancement.setMinimumValue(0.0)
    enhancement.setMaximumValue(255.0 if is_byte else 1.0)
    renderer.setContrastEnhancement(enhancement)
    return renderer


def _raster(path: str, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise StylingError(f"cannot open the output raster {path}")
    return layer


def add_results_to_project(
    outputs: dict[str, str],
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    input_name: str,
    model_name: str,
    project: QgsProject | None = None,
) -> QgsLayerTreeGroup:
    """Load ``outputs`` (keys ``raster``, ``vector``, ``confidence``) styled, in a group "<input> – <model>".

    Returns:
        The layer-tree group (inserted at the top of the layer tree).
    """
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.insertGroup(0, f"{input_name} – {model_name}")
    group.setExpanded(True)
    layers: list[QgsMapLayer] = []
    if outputs.get("vector"):
        path = outputs["vector"]
        vector = QgsVectorLayer(path, f"{input_name} polygons", "ogr")
        if not vector.isValid():
            raise StylingError(f"cannot open the output polygons {path}")
        vector.setRenderer(categorized_renderer(class_names, colors))
        layers.append(vector)
    if outputs.get("raster"):
        raster = _raster(outputs["raster"], f"{input_name} classes")
        raster.setRenderer(paletted_renderer(raster, class_names, colors))
        layers.append(raster)
    if outputs.get("confidence"):
        confidence = _raster(outputs["confidence"], f"{input_name} confidence")
        confidence.setRenderer(greyscale_renderer(confidence))
        confidence.setCustomProperty("rsp_segmentation/kind", "confidence")
        layers.append(confidence)
    for layer in layers:
        layer.setCustomProperty("rsp_segmentation/source", os.path.abspath(layer.source().split("|")[0]))
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    # Keep the confidence layer hidden by default: it would cover the classes.
    for child in group.findLayers():
        if child.layer().customProperty("rsp_segmentation/kind") == "confidence":
            child.setItemVisibilityChecked(False)
    return group
