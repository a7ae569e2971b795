"""After a segmentation or a training run: **Where to label next** (and, in the Train dialog, **Continue training**).

Owns the row of controls the Segment layer and Train model dialogs show once a run has finished
(:class:`LabelNextRow`: the button, how many squares and their size, remembered in the plugin settings) and the
side run it starts (:class:`SuggestRun`, run by :meth:`.run_dialog.RunDialog.start_side_run` with the dialog's
progress bar, Cancel and task entry): ``python -m training suggest`` on the run's model and raster, and on the
training labels layer when there is one (written to a GeoPackage first when it is not a plain OGR file, as
fine-tuning's labels are). Its squares are added as a styled layer on top of the layer tree and the map zooms to
the first one (:mod:`.suggestion_layer`). Continue training itself belongs to the Train dialog (it is a training
run); this row only holds its button.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import QTemporaryDir
from qgis.PyQt.QtWidgets import QHBoxLayout, QPushButton, QSpinBox, QWidget

from . import plugin_settings
from .engine_runner import EngineRunner
from .layer_inputs import LayerExportError, vector_layer_source
from .layer_styling import StylingError
from .parameters import InvalidParametersError
from .progress_stream import DoneEvent, OtherEvent, ProgressEvent
from .run_dialog import MESSAGE_TITLE
from .suggest_parameters import (
    DEFAULT_COUNT,
    GPKG,
    MAX_COUNT,
    MAX_SIZE,
    SIZE_STEP,
    SuggestParameters,
)
from .suggestion_layer import add_suggestions_to_project, zoom_to_first
from .train_parameters import TRAINING_MODULE

SUGGEST_BUTTON_TEXT = "Where to label next"
CONTINUE_BUTTON_TEXT = "Continue training"
COUNT_SETTING, SIZE_SETTING = "suggest_count", "suggest_size"
MODEL_TILE_TEXT = "of the model's tile"


class LabelNextRow(QWidget):
    """``[Where to label next] [8 squares] [of the model's tile]  [Continue training]``, hidden until a run ends.

    Attributes:
        suggest_button: starts Where to label next.
        count_spin: how many squares.
        size_spin: a square's side in raster pixels; 0 (shown as "of the model's tile") lets the command choose.
        continue_button: Continue training (only when made with ``with_continue``), else None.
    """

    def __init__(self, parent: QWidget, with_continue: bool = False) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.suggest_button = QPushButton(SUGGEST_BUTTON_TEXT, self)
        self.suggest_button.setObjectName("whereToLabelNextButton")
        self.suggest_button.setToolTip(
            "Squares of the raster where the model is least sure, spread over the classes it predicts, "
            "away from your labels, added as a numbered layer; the map zooms to square 1. On eight test scenes, "
            "labelling there measured about as good as labelling at random places (README)"
        )
        self.count_spin = QSpinBox(self)
        self.count_spin.setObjectName("suggestCountSpin")
        self.count_spin.setRange(1, MAX_COUNT)
        self.count_spin.setSuffix(" squares")
        self.count_spin.setValue(int(plugin_settings.get_value(COUNT_SETTING, DEFAULT_COUNT, int)))
        self.size_spin = QSpinBox(self)
        self.size_spin.setObjectName("suggestSizeSpin")
        self.size_spin.setRange(0, MAX_SIZE)
        self.size_spin.setSingleStep(SIZE_STEP)
        self.size_spin.setPrefix("of ")
        self.size_spin.setSuffix(" px")
        self.size_spin.setSpecialValueText(MODEL_TILE_TEXT)
        self.size_spin.setValue(int(plugin_settings.get_value(SIZE_SETTING, 0, int)))
        layout.addWidget(self.suggest_button)
        layout.addWidget(self.count_spin)
        layout.addWidget(self.size_spin)
        layout.addStretch(1)
        self.continue_button: QPushButton | None = None
        if with_continue:
            self.continue_button = QPushButton(CONTINUE_BUTTON_TEXT, self)
            self.continue_button.setObjectName("continueTrainingButton")
            self.continue_button.setToolTip(
                "Fine-tune again from the model just trained, with the labels layer as it is now (add labels in the "
                "suggested squares first) and the same options; the hold-out figures of both are shown side by side"
            )
            layout.addWidget(self.continue_button)
        self.hide()

    def count(self) -> int:
        """How many squares to suggest."""
        return self.count_spin.value()

    def size(self) -> int | None:
        """A square's side in pixels; None for the model's tile."""
        return self.size_spin.value() or None

    def remember(self) -> None:
        """Keep the count and size for the next run (and the other dialog)."""
        plugin_settings.set_value(COUNT_SETTING, self.count_spin.value())
        plugin_settings.set_value(SIZE_SETTING, self.size_spin.value())


def _written_path(event: DoneEvent, requested: str) -> str:
    """The GeoPackage the ``done`` event names (any output ending in ``.gpkg``), else the requested path."""
    for path in event.outputs.values():
        if path.lower().endswith(GPKG):
            return path
    return requested


class SuggestRun:
    """One ``training suggest`` run started from a dialog (a :class:`.run_dialog.SideRun`).

    Attributes:
        params: the run's parameters.
        layer_name: the name of the layer the squares are added as.
        layer: that layer, once the run is done and it was added.
        warnings: the run's ``warning`` messages, shown with the result.
    """

    starting_text = "Looking for where to label next…"
    failed_title = "Where to label next failed"
    cancelled_text = "Where to label next was cancelled; no layer was added."

    def __init__(self, iface: Any, params: SuggestParameters, layer_name: str, keep: Any = None) -> None:
        """``keep``: what must live until the run ends (the temporary folder of an exported labels layer)."""
        self.iface = iface
        self.params = params
        self.layer_name = layer_name
        self.layer: QgsVectorLayer | None = None
        self.warnings: list[str] = []
        self._keep = keep
        self.task_title = f"Where to label next: {layer_name}"

    def new_runner(self, parent: Any) -> EngineRunner:
        """The ``training suggest`` subprocess (not started)."""
        runner = EngineRunner(
            plugin_settings.interpreter(), self.params.suggest_args(), self.params.output_paths(), parent,
            module=TRAINING_MODULE,
        )  # fmt: skip
        runner.other.connect(self._on_event)
        return runner

    def _on_event(self, event: OtherEvent) -> None:
        if event.name == "warning" and event.raw.get("message"):
            self.warnings.append(str(event.raw["message"]))

    def progress_text(self, event: ProgressEvent) -> str:
        """``"Where to label next: 12 of 40 windows"``."""
        return f"Where to label next: {event.done} of {event.total} windows"

    def on_done(self, event: DoneEvent) -> str:
        """Add the squares as a styled layer on top of the layer tree, zoom to square 1; the status line."""
        path = _written_path(event, self.params.output)
        try:
            self.layer = add_suggestions_to_project(path, self.layer_name)
        except StylingError as exc:
            return f"The suggestions were written to {path}, but cannot be shown: {exc}"
        count = self.layer.featureCount()
        notes = "".join(f"\n{w}" for w in self.warnings)
        if count == 0:
            return f"No square to suggest (the raster may be fully labelled).{notes}"
        zoom_to_first(self.iface.mapCanvas(), self.layer)
        self.iface.messageBar().pushSuccess(
            MESSAGE_TITLE, f"{count} squares to label next: the map shows square 1 ({self.layer_name})"
        )
        return (
            f"{count} squares where the model is least sure are in the layer '{self.layer_name}'; the map "
            f"shows square 1. Digitise there, then train again.{notes}"
        )

    def on_end(self) -> None:
        """Release the exported labels' temporary folder."""
        self._keep = None


def suggest_run(
    iface: Any,
    model_path: str,
    raster_path: str,
    layer_name: str,
    output: str,
    row: LabelNextRow,
    labels: Any = None,
    class_field: str = "",
    device: str | None = None,
) -> SuggestRun:
    """A checked :class:`SuggestRun` for a finished run's model and raster, with the row's count and size.

    Args:
        iface: QGIS's interface (the map canvas, the message bar).
        model_path: the run's model file.
        raster_path: the run's raster (a file or a ``/vsi...`` name).
        layer_name: the name of the layer the squares are added as.
        output: the GeoPackage to write (a free name: see :func:`.suggest_parameters.free_suggestions_path`).
        row: the dialog's :class:`LabelNextRow` (count and size).
        labels: the training labels layer (all its features; written to a temporary GeoPackage when it is not a
            plain OGR file), or None.
        class_field: the labels' class field.
        device: the device of the run the suggestions follow (None: the command's choice).

    Raises:
        InvalidParametersError: what to fix (the labels could not be written, a missing file, ...).
    """
    keep, labels_path = None, ""
    if isinstance(labels, QgsVectorLayer):
        keep = QTemporaryDir()
        try:
            labels_path = vector_layer_source(labels, folder=keep.path())
        except LayerExportError as exc:
            raise InvalidParametersError(str(exc)) from exc
    params = SuggestParameters(
        model_path=model_path,
        raster_path=raster_path,
        output=output,
        labels_path=labels_path,
        class_field=class_field if labels_path else "",
        count=row.count(),
        size=row.size(),
        device=device,
    )
    params.validate()
    row.remember()
    return SuggestRun(iface, params, layer_name, keep)
