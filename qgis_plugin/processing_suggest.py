"""Processing algorithm "Where to label next" (``rspsegmentation:suggest``).

Runs ``python -m training suggest`` (:class:`.suggest_parameters.SuggestParameters`) with
:func:`.processing_base.run_with_feedback`, like the other algorithms, so the labelling loop works in the model
builder, batch mode, ``processing.run`` and ``qgis_process``: "Fine-tune RSP model" (start model: an earlier
fine-tune) → "Where to label next" → digitise in the squares → fine-tune again. The labels are a feature source
(any provider, "Selected features only" honoured: only those are avoided), exported to a GeoPackage for the
subprocess; the squares come in the labels' CRS, or the raster's without labels. When QGIS loads the output it gets
the dialogs' style (numbered outlines, :mod:`.suggestion_layer`).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from .engine_locator import training_available
from .layer_inputs import LayerExportError, processing_features_path
from .model_catalog import bundled_demo_model
from .parameters import DEVICES
from .processing_base import RspAlgorithm, check_parameters, raster_file, run_with_feedback
from .suggest_parameters import DEFAULT_COUNT, GPKG, MAX_COUNT, MAX_SIZE, SuggestParameters
from .suggestion_layer import style_suggestions
from .train_parameters import TRAINING_MODULE

INPUT = "INPUT"
MODEL = "MODEL"
LABELS = "LABELS"
CLASS_FIELD = "CLASS_FIELD"
COUNT = "COUNT"
SIZE = "SIZE"
DEVICE = "DEVICE"
OUTPUT = "OUTPUT"
SQUARES = "SQUARES"

# Post-processors must outlive processAlgorithm (QGIS holds them as raw pointers): keep them here until used.
_POST_PROCESSORS: list[QgsProcessingLayerPostProcessorInterface] = []


class StyleSuggestions(QgsProcessingLayerPostProcessorInterface):
    """Gives the loaded suggestions the dialogs' style (numbered outlines)."""

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        """No fill, a bold outline, the rank as a label."""
        style_suggestions(layer)
        layer.triggerRepaint()


class SuggestAlgorithm(RspAlgorithm):
    """Where to label next: squares of the raster spread over the classes the model predicts (rare ones favoured)
    and, within each class, where the model is least sure, inside the raster's valid
    pixels, overlapping neither your labels nor each other, ranked (rank 1 = label there first), with the uncertainty
    (0..1) and the class predicted most in each (python -m training suggest, in the interpreter set in the plugin
    settings). Give the model you are improving and the labels it was trained on; the squares come in the labels'
    CRS. Size 0 uses the model's tile. Digitise in the squares, then fine-tune again from the same model (Fine-tune
    RSP model, Start model file). On eight real test scenes, labelling the suggested squares measured about as
    good as labelling random places (figures in the README).
    """

    ID, DISPLAY_NAME, GROUP = "suggest", "Where to label next", "Training"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster"))
        self.addParameter(
            QgsProcessingParameterFile(
                MODEL, "Model file (default: the bundled demo model)", extension="rspmodel", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                LABELS, "Labels already made (polygons)", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                CLASS_FIELD, "Labels' class field", parentLayerParameterName=LABELS, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                COUNT, "Number of squares", QgsProcessingParameterNumber.Integer, DEFAULT_COUNT, False, 1, MAX_COUNT
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                SIZE,
                "Square size in raster pixels (0: the model's tile)",
                QgsProcessingParameterNumber.Integer,
                0,
                False,
                0,
                MAX_SIZE,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                OUTPUT, "Where to label next", QgsProcessing.TypeVectorPolygon, defaultValue=None
            )
        )
        self.addOutput(QgsProcessingOutputNumber(SQUARES, "Number of squares written"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Run ``training suggest`` in the engine interpreter and return the squares (``{}`` when cancelled)."""
        if not training_available():
            raise QgsProcessingException("The training package is missing from the plugin folder: reinstall it.")
        raster = raster_file(self.parameterAsRasterLayer(parameters, INPUT, context), "raster")
        model = self.parameterAsFile(parameters, MODEL, context)
        if not model:
            model = bundled_demo_model() or ""
            feedback.pushInfo(f"using the bundled demo model {model}")
        labels = ""
        if parameters.get(LABELS):
            try:
                labels = processing_features_path(self.parameterDefinition(LABELS), parameters, context, feedback)
            except LayerExportError as exc:
                raise QgsProcessingException(f"Cannot write the labels: {exc.detail or exc}") from exc
        output = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        if not output.lower().endswith(GPKG):
            raise QgsProcessingException("Save the squares as a GeoPackage (.gpkg).")
        params = SuggestParameters(
            model_path=model,
            raster_path=raster,
            output=output,
            labels_path=labels,
            class_field=self.parameterAsString(parameters, CLASS_FIELD, context) if labels else "",
            count=self.parameterAsInt(parameters, COUNT, context),
            size=self.parameterAsInt(parameters, SIZE, context) or None,
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
            overwrite=True,  # Processing owns its destinations (temporary outputs or user-confirmed files)
        )
        check_parameters(params)
        done = run_with_feedback(params.suggest_args(), params.output_paths(), feedback, TRAINING_MODULE)
        if done is None:
            feedback.reportError("Cancelled; no output was kept.")
            return {}
        written = next((p for p in done.outputs.values() if p.lower().endswith(GPKG)), output)
        if context.willLoadLayerOnCompletion(output):
            processor = StyleSuggestions()
            _POST_PROCESSORS.append(processor)
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(processor)
        return {OUTPUT: written, SQUARES: self._count(written)}

    @staticmethod
    def _count(path: str) -> int:
        from osgeo import ogr

        dataset = ogr.Open(path)
        return int(dataset.GetLayer(0).GetFeatureCount()) if dataset is not None else 0
