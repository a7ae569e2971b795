"""Layer adapters: turn what the analyst picked in QGIS into what a subprocess reads (files and numbers).

Owns, for the dialogs and the Processing algorithms alike:

- a raster layer → the GDAL file behind it (:func:`layer_file_path`);
- an extent (the map canvas view, or a rectangle) → a bounding box in the raster layer's CRS, clipped to the layer
  (:func:`canvas_bbox`, :func:`bbox_within_layer`);
- a vector layer's features, or its selected features → a temporary GeoPackage, optionally reprojected
  (:func:`export_features`; the polygon mask of a run);
- a vector labels layer → a file OGR can read (:func:`vector_layer_source`: the layer's own file when it is one, else
  an export);
- a Processing feature-source parameter → a single-layer GeoPackage (:func:`processing_features_path`, honouring
  "Selected features only");
- a labels layer's categorised style → class names, colours and the field values they stand for
  (:func:`categorized_classes`; the classes of a fine-tuning run), written as ``classes.json`` by
  :func:`write_style_classes`.

The engine and training never see a QGIS layer: only these paths and numbers cross the process boundary.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameters,
    QgsProcessingUtils,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

from .train_parameters import CLASSES_FILE_NAME, TrainParameters, class_entry, resumable_labels, write_classes_json

if TYPE_CHECKING:
    from qgis.gui import QgsMapCanvas

BBox = tuple[float, float, float, float]
"""``(xmin, ymin, xmax, ymax)`` in a layer's CRS units."""

MASK_FILE_NAME = "mask.gpkg"
LABELS_FILE_NAME = "labels.gpkg"
FEATURES_FILE_NAME = "features.gpkg"
WGS84_RADIUS_M = 6378137.0  # for a geographic layer's pixel size shown in the dialog (the engine is exact)


class LayerExportError(Exception):
    """A vector layer could not be written for the subprocess; the message says what to do.

    Attributes:
        detail: the writer's own error text ("" when nothing was written, e.g. no feature selected).
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def layer_file_path(layer: Any) -> str:
    """The local GDAL file behind a raster layer.

    Args:
        layer: any map layer (or None).

    Returns:
        The file path, or ``""`` when ``layer`` is not a raster layer read by GDAL from a local file (e.g. a web
        service, a virtual raster in memory, a vector layer).
    """
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return ""
    path = layer.source().split("|")[0]
    return path if os.path.isfile(path) else ""


def layer_gdal_name(layer: Any) -> str:
    """The GDAL dataset name behind a raster layer of the ``gdal`` provider that is not a local file.

    Args:
        layer: any map layer (or None).

    Returns:
        A ``/vsicurl/``, ``/vsizip/``, ``/vsis3/``... name (a remote COG, a raster in an archive), or ``""`` (a
        local file: see :func:`layer_file_path`; another provider; not a raster layer).
    """
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return ""
    name = layer.source().split("|")[0]
    return name if name.startswith("/vsi") else ""


def layer_pixel_size_m(layer: Any) -> float | None:
    """A raster layer's east-west pixel size in metres (at the layer's centre for geographic CRSs).

    Args:
        layer: any map layer (or None).

    Returns:
        Metres, or None when unknown (not a raster layer, no valid CRS, or a web layer without a native pixel size).
    """
    if not isinstance(layer, QgsRasterLayer) or not layer.crs().isValid() or layer.rasterUnitsPerPixelX() <= 0:
        return None
    size = layer.rasterUnitsPerPixelX()
    if layer.crs().isGeographic():
        lat = math.radians(layer.extent().center().y())
        return size * math.pi / 180 * WGS84_RADIUS_M * math.cos(lat)
    return size * QgsUnitTypes.fromUnitToUnitFactor(layer.crs().mapUnits(), QgsUnitTypes.DistanceMeters)


def bbox_within_layer(rect: QgsRectangle, layer: QgsMapLayer) -> BBox | None:
    """Clip a rectangle to a layer's extent.

    Args:
        rect: a rectangle already in ``layer``'s CRS.
        layer: the layer whose extent bounds the result.

    Returns:
        ``(xmin, ymin, xmax, ymax)`` of the overlap in the layer's CRS units, or None when they do not overlap.
    """
    overlap = rect.intersect(layer.extent())
    if overlap.isEmpty():
        return None
    return (overlap.xMinimum(), overlap.yMinimum(), overlap.xMaximum(), overlap.yMaximum())


def canvas_bbox(canvas: QgsMapCanvas, layer: QgsMapLayer) -> BBox | None:
    """The map canvas's visible extent as a bounding box in ``layer``'s CRS, clipped to the layer.

    Args:
        canvas: the map canvas (its destination CRS may differ from the layer's).
        layer: the raster layer to process.

    Returns:
        ``(xmin, ymin, xmax, ymax)`` in the layer's CRS units, or None when the view does not overlap the layer.
    """
    transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), layer.crs(), QgsProject.instance())
    return bbox_within_layer(transform.transformBoundingBox(canvas.extent()), layer)


def export_features(
    layer: QgsVectorLayer,
    *,
    selected_only: bool = False,
    crs: QgsCoordinateReferenceSystem | None = None,
    folder: str | None = None,
    name: str = FEATURES_FILE_NAME,
    transform_context: QgsCoordinateTransformContext | None = None,
) -> str:
    """Write a vector layer's features (or only its selected ones) to a GeoPackage the subprocess can read.

    Works for any layer QGIS can read (memory/scratch layers, databases, web services, files); attributes are kept.

    Args:
        layer: the vector layer (e.g. the polygons limiting a run, or training labels).
        selected_only: write only the selected features.
        crs: reproject the features to this CRS (e.g. the input raster's); None keeps the layer's CRS.
        folder: write ``folder/name``; the caller owns the folder's lifetime (e.g. a ``QTemporaryDir`` kept for the
            duration of the run). None writes into a fresh folder of QGIS's Processing temporary folder, removed
            when QGIS exits.
        name: the GeoPackage's file name.
        transform_context: datum transformations to use; None uses the current project's.

    Returns:
        The GeoPackage's path.

    Raises:
        LayerExportError: ``selected_only`` with no feature selected, or the writer failed.
    """
    if selected_only and layer.selectedFeatureCount() == 0:
        raise LayerExportError(
            f"No feature of layer '{layer.name()}' is selected: select the features to use, or use all of them."
        )
    context = transform_context if transform_context is not None else QgsProject.instance().transformContext()
    path = os.path.join(folder, name) if folder else QgsProcessingUtils.generateTempFilename(name)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.onlySelectedFeatures = selected_only
    if crs is not None:
        options.ct = QgsCoordinateTransform(layer.crs(), crs, context)
    error = QgsVectorFileWriter.writeAsVectorFormatV2(layer, path, context, options)
    if error[0] != QgsVectorFileWriter.NoError:
        raise LayerExportError(f"Cannot write the features of layer '{layer.name()}' to {path}: {error[1]}", error[1])
    return path


def vector_file_path(layer: Any) -> str:
    """The OGR file that holds exactly a vector layer's features, when there is one.

    Args:
        layer: any map layer (or None).

    Returns:
        The file path when ``layer`` is an unfiltered OGR layer of a local single-layer file (a shapefile, a
        GeoJSON, a GeoPackage with one table), else ``""`` (memory, database or web layers, one layer of a
        multi-layer file, a layer with a filter).
    """
    if not isinstance(layer, QgsVectorLayer) or layer.providerType() != "ogr" or layer.subsetString():
        return ""
    path = str(QgsProviderRegistry.instance().decodeUri("ogr", layer.source()).get("path") or "")
    if not os.path.isfile(path):
        return ""
    from osgeo import ogr

    dataset = ogr.Open(path)
    return path if dataset is not None and dataset.GetLayerCount() == 1 else ""


def vector_layer_source(layer: QgsVectorLayer, selected_only: bool = False, folder: str | None = None) -> str:
    """A file OGR can read holding a vector layer's features (e.g. training labels), for a subprocess.

    The layer's own file when :func:`vector_file_path` finds one and all features are wanted; otherwise the
    features are exported to a GeoPackage (``labels.gpkg``, see :func:`export_features`). The CRS and attributes
    are the layer's; the file's first (only) layer holds the features.

    Args:
        layer: the vector layer.
        selected_only: only the selected features (always exported).
        folder: where an export goes (see :func:`export_features`); None uses QGIS's Processing temporary folder.

    Returns:
        The path of a single-layer OGR file.

    Raises:
        LayerExportError: ``selected_only`` with no feature selected, or the export failed.
    """
    if not selected_only:
        path = vector_file_path(layer)
        if path:
            return path
    return export_features(layer, selected_only=selected_only, folder=folder, name=LABELS_FILE_NAME)


def processing_features_path(
    definition: QgsProcessingParameterDefinition,
    parameters: dict[str, Any],
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback | None = None,
) -> str:
    """The features of a Processing feature-source parameter, exported to a single-layer GeoPackage.

    Unlike ``parameterAsVectorLayer`` (None for a "Selected features only" source), this honours the source's
    selection and feature limit; QGIS's own exporter writes the file in the Processing temporary folder.

    Args:
        definition: the parameter (a ``QgsProcessingParameterFeatureSource``), e.g. ``alg.parameterDefinition(name)``.
        parameters: the algorithm's parameter values.
        context: the Processing context (project, transform context).
        feedback: where the export reports progress and problems (None: a fresh one, as QGIS 3.22's exporter crashes
            on a null feedback).

    Returns:
        The GeoPackage's path; its first (only) layer holds the features, in the source's CRS.

    Raises:
        LayerExportError: the export failed (e.g. the source is not a vector layer).
    """
    path = QgsProcessingParameters.parameterAsCompatibleSourceLayerPath(
        definition, parameters, context, [], "gpkg", feedback if feedback is not None else QgsProcessingFeedback()
    )
    if not path or not os.path.isfile(path):
        raise LayerExportError(f"Cannot write the features of {definition.description()!r}.", "no file was written")
    return path


LayerClass = tuple[str, tuple[int, int, int], Any]
"""``(name, (r, g, b), value)``: a class name, its colour, and the field value that means it."""


def categorized_classes(layer: Any, field: str) -> list[LayerClass] | None:
    """The classes a vector layer's categorised style defines on ``field``, in the style's order.

    Each category gives one class: its legend label (the value when the label is empty), its symbol's colour and its
    value. The "all other values" category and categories of several values are left out.

    Args:
        layer: any map layer (or None).
        field: the class field.

    Returns:
        The classes, or None when ``layer`` is not a vector layer styled by categories of ``field`` (the caller then
        uses the field's values).
    """
    if not isinstance(layer, QgsVectorLayer):
        return None
    renderer = layer.renderer()
    if not isinstance(renderer, QgsCategorizedSymbolRenderer) or renderer.classAttribute() != field:
        return None
    classes: list[LayerClass] = []
    for category in renderer.categories():
        value = category.value()
        if value is None or value == "" or isinstance(value, list | tuple | QVariant):  # a QVariant here is NULL
            continue
        color = category.symbol().color() if category.symbol() is not None else None
        rgb = (color.red(), color.green(), color.blue()) if color is not None else (128, 128, 128)
        classes.append((category.label().strip() or str(value), rgb, value))
    return classes or None


def write_style_classes(layer: Any, field: str, folder: str) -> str | None:
    """Write the classes of ``layer``'s categorised style on ``field`` as ``<folder>/classes.json`` (``--classes``).

    Args:
        layer: the labels layer (any map layer, or None).
        field: the class field.
        folder: where ``classes.json`` goes (created when needed).

    Returns:
        The file written, or None when the layer is not styled by categories of ``field`` (nothing is written).

    Raises:
        InvalidParametersError: two categories have the same name.
    """
    classes = categorized_classes(layer, field) if field else None
    if not classes:
        return None
    return write_classes_json([class_entry(*c) for c in classes], os.path.join(folder, CLASSES_FILE_NAME))


def write_run_inputs(params: TrainParameters, labels: Any, selected_only: bool) -> None:
    """Write a checked fine-tuning run's inputs into its work folder: the labels layer's features (when the run reads
    the work folder's labels file and is not resuming with one) and ``classes.json`` from the layer's categorised style.

    Raises:
        LayerExportError: a file could not be written (nothing else is changed then).
    """
    os.makedirs(params.work_folder, exist_ok=True)
    exported = os.path.join(params.work_folder, LABELS_FILE_NAME)
    if params.labels_path == exported and not (params.resume and resumable_labels(params.work_folder)):
        export_features(labels, selected_only=selected_only, folder=params.work_folder, name=LABELS_FILE_NAME)
    if params.classes_json:
        write_style_classes(labels, params.class_field, params.work_folder)
