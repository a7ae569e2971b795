"""Processing algorithms "Fine-tune RSP model" (``rspsegmentation:finetune``) and "Compute accuracy"
(``rspsegmentation:accuracy``).

Both run the training package in the engine interpreter (``python -m training finetune|accuracy``) with
:func:`.processing_base.run_with_feedback`, like "Segment raster with RSP model" runs the engine, so they work in the
model builder, batch mode, ``processing.run`` and ``qgis_process``. Their parameters mirror the command line
(:mod:`.train_parameters` builds it for the Train model dialog too); the hold-out or reference metrics come back as
numeric outputs (``OA``, ``KAPPA``, ``MIOU``, ``MF1``, ×100).

Decisions: the labels are a feature source, so "Selected features only" and any provider work (exported by
:func:`.layer_inputs.processing_features_path`); when the labels layer is styled by categories of the class field,
the classes' names, order and colours come from that style, as in the dialog. Without a start model or backbone the
bundled start model (:func:`.model_catalog.bundled_start_model`) is the start. The work folder is
``<output>_finetune`` next to the output model.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .engine_locator import training_available
from .layer_inputs import (
    LayerExportError,
    layer_file_path,
    processing_features_path,
    vector_layer_source,
    write_style_classes,
)
from .model_catalog import bundled_start_model
from .parameters import DEVICES
from .processing_base import RspAlgorithm, check_parameters, raster_file, run_with_feedback
from .progress_stream import DoneEvent, ProgressEvent
from .train_parameters import (
    DEFAULT_VAL_FRACTION,
    MAX_BATCH_SIZE,
    MAX_ITERATIONS,
    MAX_TILE,
    MODEL_SUFFIX,
    RSP_BACKBONE_ARCHS,
    TRAINING_MODULE,
    StartKind,
    TrainParameters,
    accuracy_args,
)

INPUT = "INPUT"
LABELS = "LABELS"
CLASS_FIELD = "CLASS_FIELD"
MODEL = "MODEL"
BACKBONE = "BACKBONE"
ARCH = "ARCH"
ITERATIONS = "ITERATIONS"
DEVICE = "DEVICE"
BATCH_SIZE = "BATCH_SIZE"
TILE = "TILE"
VAL_FRACTION = "VAL_FRACTION"
FREEZE_BACKBONE = "FREEZE_BACKBONE"
OUTPUT = "OUTPUT"
REPORT = "REPORT"
PREDICTION = "PREDICTION"
REFERENCE = "REFERENCE"
METRIC_OUTPUTS = {"OA": "OA", "KAPPA": "kappa", "MIOU": "mIoU", "MF1": "mF1"}  # output name → event key
ARCH_OPTIONS = ("find from the backbone file", *RSP_BACKBONE_ARCHS)


def _loss_text(event: ProgressEvent) -> str:
    """``"iteration 12/300, loss 0.5432"`` from a training progress event ("" without a loss)."""
    if "loss" not in event.raw:
        return ""
    return f"iteration {event.done}/{event.total}, loss {float(event.raw['loss']):.4f}"


def _run(
    args: list[str], outputs: list[str], feedback: QgsProcessingFeedback, progress_text: bool = False
) -> DoneEvent:
    """``<interpreter> -m training <args>`` to the end; a failure or a cancel becomes a ``QgsProcessingException``."""
    if not training_available():
        raise QgsProcessingException("The training package is missing from the plugin folder: reinstall the plugin.")
    done = run_with_feedback(args, outputs, feedback, TRAINING_MODULE, _loss_text if progress_text else None)
    if done is None:
        raise QgsProcessingException("Cancelled; no output was kept.")
    return done


def _metric_results(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values.get(key) for name, key in METRIC_OUTPUTS.items()}


def _add_metric_outputs(algorithm: RspAlgorithm, what: str) -> None:
    for name, key in METRIC_OUTPUTS.items():
        algorithm.addOutput(QgsProcessingOutputNumber(name, f"{key} ({what}, ×100)"))


class FinetuneAlgorithm(RspAlgorithm):
    """Fine-tunes a model on polygons you digitised over a raster (python -m training finetune, in the interpreter set
    in the plugin settings). Start from a model file (default: the bundled start model; an earlier fine-tune continues
    it, e.g. with the labels added where "Where to label next" pointed) or an RSP pretraining checkpoint (backbone
    file). Only labelled pixels train. A share of the labelled area, split into spatial blocks, is held out:
    OA, kappa, mIoU and mF1 are measured there and stored in the model file. Classes come from the labels layer's
    categorised style on the class field, else from the field's values. Checkpoints, report.json and a confusion matrix
    go to <output>_finetune.
    """

    ID, DISPLAY_NAME, GROUP = "finetune", "Fine-tune RSP model", "Training"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster"))
        self.addParameter(
            QgsProcessingParameterFeatureSource(LABELS, "Labels (polygons)", [QgsProcessing.TypeVectorPolygon])
        )
        self.addParameter(QgsProcessingParameterField(CLASS_FIELD, "Class field", parentLayerParameterName=LABELS))
        self.addParameter(
            QgsProcessingParameterFile(
                MODEL, "Start model file (default: the bundled start model)", extension="rspmodel", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(BACKBONE, "Or start from an RSP backbone file (*.pth)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterEnum(ARCH, "Backbone architecture", options=list(ARCH_OPTIONS), defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                ITERATIONS,
                "Iterations (0: the architecture's default, 300 for the demo network)",
                QgsProcessingParameterNumber.Integer,
                0,
                False,
                0,
                MAX_ITERATIONS,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterNumber(
                BATCH_SIZE, "Batch size (0: default)", QgsProcessingParameterNumber.Integer, 0, False, 0, MAX_BATCH_SIZE
            ),
            QgsProcessingParameterNumber(
                TILE, "Tile size in pixels (0: default)", QgsProcessingParameterNumber.Integer, 0, False, 0, MAX_TILE
            ),
            QgsProcessingParameterNumber(
                VAL_FRACTION,
                "Held-out share of the labelled area",
                QgsProcessingParameterNumber.Double,
                DEFAULT_VAL_FRACTION,
                False,
                0.01,
                0.5,
            ),
            QgsProcessingParameterBoolean(FREEZE_BACKBONE, "Train the heads only (freeze the backbone)", False),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(OUTPUT, "Model file", "RSP model (*.rspmodel)"))
        self.addOutput(QgsProcessingOutputFile(REPORT, "Report (report.json)"))
        _add_metric_outputs(self, "hold-out")

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Run the training package in the engine interpreter and return its outputs."""
        raster = raster_file(self.parameterAsRasterLayer(parameters, INPUT, context), "raster")
        output = self.parameterAsFileOutput(parameters, OUTPUT, context)
        if not output.endswith(MODEL_SUFFIX):
            output += MODEL_SUFFIX
        field = self.parameterAsString(parameters, CLASS_FIELD, context)
        try:
            labels = processing_features_path(self.parameterDefinition(LABELS), parameters, context, feedback)
        except LayerExportError as exc:
            raise QgsProcessingException(f"Cannot write the labels: {exc.detail or exc}") from exc
        backbone = self.parameterAsFile(parameters, BACKBONE, context)
        model = self.parameterAsFile(parameters, MODEL, context)
        if backbone and model:
            raise QgsProcessingException("Give a start model file or a backbone file, not both.")
        if not backbone and not model:
            model = bundled_start_model() or ""
            feedback.pushInfo(f"starting from the bundled start model {model}")
        arch_index = self.parameterAsEnum(parameters, ARCH, context)
        params = TrainParameters(
            raster_path=raster,
            labels_path=labels,
            class_field=field,
            output_model=output,
            start=StartKind.BACKBONE if backbone else StartKind.MODEL,
            init_model=model,
            backbone=backbone,
            arch=ARCH_OPTIONS[arch_index] if backbone and arch_index > 0 else None,
            iterations=self.parameterAsInt(parameters, ITERATIONS, context) or None,
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
            batch_size=self.parameterAsInt(parameters, BATCH_SIZE, context) or None,
            tile=self.parameterAsInt(parameters, TILE, context) or None,
            classes_json=self._classes_json(parameters, context, field),
            val_fraction=self.parameterAsDouble(parameters, VAL_FRACTION, context),
            freeze_backbone=self.parameterAsBool(parameters, FREEZE_BACKBONE, context),
            overwrite=True,  # Processing owns its destinations (temporary outputs or user-confirmed files)
        )
        check_parameters(params)
        done = _run(params.finetune_args(), params.output_paths(), feedback, progress_text=True)
        metrics = dict(done.raw.get("metrics") or {})
        for row in done.raw.get("per_class") or []:
            feedback.pushInfo(f"hold-out F1 {row.get('class')}: {row.get('F1')}")
        return {
            OUTPUT: str(done.raw.get("model") or output),
            REPORT: done.outputs.get("report", ""),
            **_metric_results(metrics),
        }

    def _classes_json(self, parameters: dict[str, Any], context: QgsProcessingContext, field: str) -> str | None:
        """``classes.json`` from the labels layer's categorised style on ``field`` (in a temporary folder), or None."""
        value = parameters.get(LABELS)
        if isinstance(value, QgsProcessingFeatureSourceDefinition):
            value = value.source.staticValue()
        layer = value if isinstance(value, QgsVectorLayer) else None
        if layer is None and isinstance(value, str):
            found = QgsProcessingUtils.mapLayerFromString(value, context)
            layer = found if isinstance(found, QgsVectorLayer) else None
        folder = os.path.join(QgsProcessingUtils.tempFolder(), f"rsp_classes_{uuid.uuid4().hex}")  # made when written
        return write_style_classes(layer, field, folder)


class AccuracyAlgorithm(RspAlgorithm):
    """Compares a class raster (as Segment raster writes it: class names from its categories) with reference polygons
    (and their class field) or a reference class raster, matching classes by name (python -m training accuracy).
    Unlabelled and nodata pixels are ignored. Writes a JSON report (per-class IoU, F1, precision, recall, confusion
    matrix) and returns OA, kappa, mIoU and mF1 (×100). Use reference labels the model did not train on.
    """

    ID, DISPLAY_NAME, GROUP = "accuracy", "Compute accuracy", "Training"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(PREDICTION, "Class raster (prediction)"))
        self.addParameter(
            QgsProcessingParameterMapLayer(
                REFERENCE,
                "Reference (polygons or class raster)",
                types=[QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeRaster],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                CLASS_FIELD, "Reference class field (polygons)", parentLayerParameterName=REFERENCE, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination(OUTPUT, "Report", "JSON files (*.json)"))
        _add_metric_outputs(self, "against the reference")

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Run the training package in the engine interpreter and return its outputs."""
        prediction = raster_file(self.parameterAsRasterLayer(parameters, PREDICTION, context), "class raster")
        reference_layer = self.parameterAsLayer(parameters, REFERENCE, context)
        field = self.parameterAsString(parameters, CLASS_FIELD, context) or None
        if isinstance(reference_layer, QgsRasterLayer):
            reference = layer_file_path(reference_layer)
            field = None
        elif isinstance(reference_layer, QgsVectorLayer):
            if not field:
                raise QgsProcessingException("Choose the reference polygons' class field.")
            try:
                reference = vector_layer_source(reference_layer)
            except LayerExportError as exc:
                raise QgsProcessingException(str(exc)) from exc
        else:
            reference = ""
        if not reference:
            raise QgsProcessingException("The reference must be a polygon layer or a class raster stored in a file.")
        output = self.parameterAsFileOutput(parameters, OUTPUT, context)
        done = _run(accuracy_args(prediction, reference, field, output), [output], feedback)
        for row in done.raw.get("per_class") or []:
            feedback.pushInfo(f"{row.get('class')}: F1 {row.get('F1')}, IoU {row.get('IoU')}")
        return {OUTPUT: done.outputs.get("report") or output, **_metric_results(done.raw)}
