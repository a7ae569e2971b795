"""Processing algorithm "Segment raster with RSP model" (``rspsegmentation:segmentraster``).

Same options and the same engine subprocess as the dialog (:class:`.parameters.SegmentParameters`, run by
:func:`.processing_base.run_with_feedback`), so it works in the model builder, batch mode, ``processing.run`` and
``qgis_process``. Progress comes from the engine's stream; ``feedback.isCanceled()`` terminates the subprocess and
its partial outputs are removed. Outputs are loaded and styled by :mod:`.layer_styling` when run from the GUI.
"""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)

from . import plugin_settings
from .engine_locator import ensure_engine_importable
from .layer_inputs import LayerExportError, bbox_within_layer, processing_features_path
from .layer_styling import categorized_renderer, paletted_renderer
from .parameters import (
    DEFAULT_BATCH_SIZE,
    DEVICES,
    GSD_MODEL,
    GSD_NATIVE,
    MAX_BATCH_SIZE,
    PRECISIONS,
    ExtentMode,
    SegmentParameters,
    parse_band_list,
    parse_gsd_text,
)
from .processing_base import RspAlgorithm, check_parameters, raster_file, run_with_feedback
from .web_layers import WebLayerProblem, checked_web_request, is_web_layer, write_description

INPUT = "INPUT"
MODEL = "MODEL"
EXTENT = "EXTENT"
MASK = "MASK"
BANDS = "BANDS"
GSD = "GSD"
DEVICE = "DEVICE"
BATCH_SIZE = "BATCH_SIZE"
PRECISION = "PRECISION"
PRECISION_LABELS = (
    "auto (bf16 where the CPU/GPU runs it natively and it was measured to match fp32)",
    "fp32 (reference numbers)",
    "bf16",
)
MIN_AREA = "MIN_AREA"
SIMPLIFY = "SIMPLIFY"
OUTPUT = "OUTPUT"
OUTPUT_VECTOR = "OUTPUT_VECTOR"
OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"


# Post-processors must outlive processAlgorithm (QGIS holds them as raw pointers): keep them here until used.
_POST_PROCESSORS: list[QgsProcessingLayerPostProcessorInterface] = []


class StyleFromModel(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded output with the model's class names and colours (as the dialog does)."""

    def __init__(self, kind: str, class_names: tuple[str, ...], colors: tuple[tuple[int, int, int], ...]) -> None:
        super().__init__()
        self.kind = kind
        self.class_names = class_names
        self.colors = colors

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        """Give the loaded layer the model's paletted (raster) or categorised (polygons) style."""
        if self.kind == "raster":
            layer.setRenderer(paletted_renderer(layer, self.class_names, self.colors))
        else:
            layer.setRenderer(categorized_renderer(self.class_names, self.colors))
        layer.triggerRepaint()


class SegmentRasterAlgorithm(RspAlgorithm):
    """Segments a raster with an RSP model file (.rspmodel) in a separate Python process (the interpreter set in the
    plugin settings). Writes a classified GeoTIFF (class ids with the model's colours and names), optionally polygons
    (class_id, class_name, area_m2) and a confidence raster. Extent and mask limit the processed area; windows stay on
    the raster's own grid.
    """

    ID, DISPLAY_NAME, GROUP = "segmentraster", "Segment raster with RSP model", "Segmentation"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters and outputs (the model defaults to the one last used in the dialog)."""
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Input raster (a file, or a web layer with Extent)"))
        self.addParameter(
            QgsProcessingParameterFile(MODEL, "Model file", extension="rspmodel", defaultValue=self._default_model())
        )
        self.addParameter(QgsProcessingParameterExtent(EXTENT, "Extent (default: whole raster)", optional=True))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                MASK, "Only inside these polygons", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(QgsProcessingParameterString(BANDS, "Bands (e.g. 1,2,3; empty = by colour)", optional=True))
        self.addParameter(
            QgsProcessingParameterString(
                GSD, "Ground sample distance: model, native or metres (e.g. 0.3)", defaultValue=GSD_MODEL
            )
        )
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(
                BATCH_SIZE,
                "Batch size",
                QgsProcessingParameterNumber.Integer,
                DEFAULT_BATCH_SIZE,
                False,
                1,
                MAX_BATCH_SIZE,
            )
        )
        precision = QgsProcessingParameterEnum(PRECISION, "Precision", options=list(PRECISION_LABELS), defaultValue=0)
        precision.setFlags(precision.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(precision)
        self.addParameter(
            QgsProcessingParameterNumber(
                MIN_AREA, "Minimum polygon area (m²)", QgsProcessingParameterNumber.Double, 0.0, False, 0.0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                SIMPLIFY, "Simplify tolerance (m)", QgsProcessingParameterNumber.Double, 0.0, False, 0.0
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "Classified raster"))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                OUTPUT_VECTOR, "Polygons", QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                OUTPUT_CONFIDENCE, "Confidence raster", optional=True, createByDefault=False
            )
        )

    @staticmethod
    def _default_model() -> str | None:
        saved = plugin_settings.get_value("model", "")
        return str(saved) if saved and os.path.isfile(str(saved)) else None

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Run the engine on the input and return the written outputs (``{}`` when cancelled)."""
        layer = self.parameterAsRasterLayer(parameters, INPUT, context)
        input_bbox = None
        if is_web_layer(layer):
            input_path, input_bbox = self._web_input(layer, parameters, context)
        else:
            input_path = raster_file(layer, "input raster")
        output = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        vector = self.parameterAsOutputLayer(parameters, OUTPUT_VECTOR, context) or None
        confidence = self.parameterAsOutputLayer(parameters, OUTPUT_CONFIDENCE, context) or None
        mode, bbox, mask = ExtentMode.WHOLE_LAYER, None, None
        if parameters.get(EXTENT) and input_bbox is None:
            bbox = bbox_within_layer(self.parameterAsExtent(parameters, EXTENT, context, layer.crs()), layer)
            if bbox is None:
                raise QgsProcessingException("The extent does not overlap the input raster.")
            mode = ExtentMode.CANVAS
        elif parameters.get(MASK):
            mask = self._write_mask(parameters, context, feedback)
            mode = ExtentMode.POLYGON_LAYER
        try:
            bands = parse_band_list(self.parameterAsString(parameters, BANDS, context) or "")
        except Exception as exc:
            raise QgsProcessingException(str(exc)) from exc
        params = SegmentParameters(
            input_path=input_path,
            model_path=self.parameterAsFile(parameters, MODEL, context),
            output_raster=output,
            output_vector=vector,
            output_confidence=confidence,
            extent_mode=mode,
            bbox=bbox,
            mask_path=mask,
            bands=bands,
            gsd=(self.parameterAsString(parameters, GSD, context) or GSD_MODEL).strip(),
            input_bbox=input_bbox,
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
            batch_size=self.parameterAsInt(parameters, BATCH_SIZE, context),
            precision=PRECISIONS[self.parameterAsEnum(parameters, PRECISION, context)],
            min_area_m2=self.parameterAsDouble(parameters, MIN_AREA, context),
            simplify_m=self.parameterAsDouble(parameters, SIMPLIFY, context),
            overwrite=True,  # Processing owns its destinations (temporary outputs or user-confirmed files)
        )
        check_parameters(params)
        done = run_with_feedback(params.engine_args(), params.output_paths(), feedback)
        if done is None:
            feedback.reportError("Cancelled; no output was kept.")
            return {}
        self._style_outputs(params.model_path, context, {OUTPUT: ("raster", output), OUTPUT_VECTOR: ("vector", vector)})
        results: dict[str, Any] = {OUTPUT: done.labels or output}
        if vector:
            results[OUTPUT_VECTOR] = done.vector or vector
        if confidence:
            results[OUTPUT_CONFIDENCE] = done.confidence or confidence
        return results

    def _web_input(
        self, layer: Any, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[str, tuple[float, float, float, float] | None]:
        """A web layer's service description for the EXTENT (required) at the GSD, written in the temporary folder."""
        if not parameters.get(EXTENT):
            raise QgsProcessingException(
                f"Layer '{layer.name()}' is a web layer, which covers the whole world: set the Extent parameter."
            )
        bbox = bbox_within_layer(self.parameterAsExtent(parameters, EXTENT, context, layer.crs()), layer)
        if bbox is None:
            raise QgsProcessingException("The extent does not overlap the input layer.")
        gsd = (self.parameterAsString(parameters, GSD, context) or GSD_MODEL).strip().lower()
        if gsd == GSD_MODEL:
            ensure_engine_importable()
            from engine.model_file import read_model_info

            gsd_m = read_model_info(self.parameterAsFile(parameters, MODEL, context)).gsd_m
        else:
            gsd_m = None if gsd == GSD_NATIVE or parse_gsd_text(gsd) is None else float(gsd)
        try:
            request = checked_web_request(layer, bbox, gsd_m)
        except WebLayerProblem as exc:
            raise QgsProcessingException(str(exc)) from exc
        folder = QgsProcessingUtils.generateTempFilename("web_layer")
        os.makedirs(folder, exist_ok=True)
        return write_description(request, folder), request.bbox

    @staticmethod
    def _style_outputs(model_path: str, context: QgsProcessingContext, outputs: dict[str, tuple[str, Any]]) -> None:
        ensure_engine_importable()
        from engine.model_file import read_model_info

        info = read_model_info(model_path)
        for kind, path in outputs.values():
            if path and context.willLoadLayerOnCompletion(path):
                processor = StyleFromModel(kind, info.class_names, info.colors)
                _POST_PROCESSORS.append(processor)
                context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)

    def _write_mask(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback | None = None
    ) -> str:
        """Materialise the mask features (any source, selected-only honoured) as a GeoPackage for the engine."""
        if self.parameterAsSource(parameters, MASK, context) is None:
            raise QgsProcessingException("The mask must be a polygon layer.")
        try:
            return processing_features_path(self.parameterDefinition(MASK), parameters, context, feedback)
        except LayerExportError as exc:
            raise QgsProcessingException(f"Cannot write the mask polygons: {exc.detail}") from exc
