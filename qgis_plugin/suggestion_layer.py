"""The "Where to label next" layer: load the squares ``training suggest`` wrote, style them, put them on top, zoom.

- Style (:func:`style_suggestions`): numbered outlines, so the imagery under a square stays visible while the
  analyst digitises there: no fill, a bold outline, and the ``rank`` as a bold label with a halo (1 = label here
  first). The map tip and display expression give the rank, the predicted class and the uncertainty.
- The layer keeps the file's CRS, which is the labels' CRS when the run had labels (else the raster's), and goes
  on top of the layer tree (:func:`add_suggestions_to_project`).
- Zoom (:func:`zoom_to_first`): the map canvas centres on the first suggestion (``rank`` 1) and shows it whole,
  with :data:`ZOOM_MARGIN` around it for context.

Must run on the main thread (it touches the project and the canvas).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsPalLayerSettings,
    QgsProject,
    QgsRectangle,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor, QFont

from .layer_styling import StylingError
from .suggest_parameters import PREDICTED_FIELD, RANK_FIELD, UNCERTAINTY_FIELD

OUTLINE_COLOR = "#ff00c8"  # magenta: stands out on aerial imagery (greens, greys, browns)
OUTLINE_WIDTH_MM = 0.9
LABEL_SIZE_PT = 14
LABEL_HALO_MM = 1.0
ZOOM_MARGIN = 1.5  # the canvas shows the first square and half its size again around it
KIND_PROPERTY = "rsp_segmentation/kind"
KIND = "suggestions"


def suggestion_symbol() -> QgsFillSymbol:
    """No fill, a bold outline."""
    return QgsFillSymbol.createSimple(
        {
            "style": "no",
            "outline_style": "solid",
            "outline_color": OUTLINE_COLOR,
            "outline_width": str(OUTLINE_WIDTH_MM),
            "outline_width_unit": "MM",
            "joinstyle": "miter",
        }
    )


def rank_labeling() -> QgsVectorLayerSimpleLabeling:
    """The ``rank`` of each square as a bold label with a white halo, in the square's middle."""
    text = QgsTextFormat()
    font = QFont()
    font.setBold(True)
    text.setFont(font)
    text.setSize(LABEL_SIZE_PT)
    text.setColor(QColor(OUTLINE_COLOR))
    halo = QgsTextBufferSettings()
    halo.setEnabled(True)
    halo.setSize(LABEL_HALO_MM)
    halo.setColor(QColor("white"))
    text.setBuffer(halo)
    settings = QgsPalLayerSettings()
    settings.fieldName = RANK_FIELD
    settings.isExpression = False
    settings.placement = QgsPalLayerSettings.OverPoint
    settings.setFormat(text)
    return QgsVectorLayerSimpleLabeling(settings)


def style_suggestions(layer: QgsVectorLayer) -> None:
    """Numbered outlines: no fill, a bold outline, labels on ``rank``; map tips with the class and uncertainty."""
    layer.setRenderer(QgsSingleSymbolRenderer(suggestion_symbol()))
    layer.setLabeling(rank_labeling())
    layer.setLabelsEnabled(True)
    names = layer.fields().names()
    about = f"'#' || \"{RANK_FIELD}\""
    if PREDICTED_FIELD in names:
        about += f" || ': mostly ' || \"{PREDICTED_FIELD}\""
    if UNCERTAINTY_FIELD in names:
        about += f" || ', uncertainty ' || format_number(\"{UNCERTAINTY_FIELD}\", 2)"
    layer.setDisplayExpression(about)
    layer.setMapTipTemplate(f"[% {about} %]")


def load_suggestions(path: str, name: str) -> QgsVectorLayer:
    """The suggestions GeoPackage as a styled layer (not yet in a project).

    Raises:
        StylingError: the file cannot be opened, or it has no ``rank`` field.
    """
    layer = QgsVectorLayer(path, name, "ogr")
    if not layer.isValid():
        raise StylingError(f"cannot open the suggestions {path}")
    if layer.fields().indexOf(RANK_FIELD) < 0:
        raise StylingError(f"the suggestions {path} have no '{RANK_FIELD}' field")
    style_suggestions(layer)
    layer.setCustomProperty(KIND_PROPERTY, KIND)
    return layer


def add_suggestions_to_project(path: str, name: str, project: QgsProject | None = None) -> QgsVectorLayer:
    """Load the suggestions (:func:`load_suggestions`) and put the layer at the top of the layer tree.

    Raises:
        StylingError: the file cannot be opened as suggestions.
    """
    project = project or QgsProject.instance()
    layer = load_suggestions(path, name)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    return layer


def first_suggestion_extent(layer: QgsVectorLayer, crs: QgsCoordinateReferenceSystem | None = None) -> QgsRectangle:
    """The bounding box of the square ranked first (the lowest ``rank``), in ``crs`` (default: the layer's).

    Returns:
        The box; an empty rectangle when the layer has no feature.
    """
    request = QgsFeatureRequest().addOrderBy(f'"{RANK_FIELD}"', True).setLimit(1)
    first = next(layer.getFeatures(request), None)
    if first is None or not first.hasGeometry():
        return QgsRectangle()
    box = first.geometry().boundingBox()
    if crs is not None and crs.isValid() and crs != layer.crs():
        box = QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance()).transformBoundingBox(box)
    return box


def zoom_to_first(canvas: Any, layer: QgsVectorLayer) -> QgsRectangle:
    """Centre the map canvas on the first suggestion, showing it whole (with :data:`ZOOM_MARGIN`).

    Args:
        canvas: the map canvas (``iface.mapCanvas()``); its CRS may differ from the layer's.
        layer: the suggestions layer.

    Returns:
        The first suggestion's box in the canvas's CRS (empty when there is none; the canvas is then unchanged).
    """
    box = first_suggestion_extent(layer, canvas.mapSettings().destinationCrs())
    if box.isEmpty():
        return box
    view = QgsRectangle(box)
    view.scale(ZOOM_MARGIN)
    canvas.setExtent(view)
    canvas.refresh()
    return box
