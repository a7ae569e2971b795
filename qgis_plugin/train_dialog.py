"""The "Train model" dialog: fine-tune a model on the analyst's own labels with ``python -m training finetune``.

The dialog gathers a :class:`.train_parameters.TrainParameters` (command line and validation there), writes the
run's inputs into its work folder (the labels layer exported through :mod:`.layer_inputs` when it is not a plain file
or only selected features are wanted; ``classes.json`` from the layer's categorised style), runs the training package
with the engine runner (a subprocess of the engine interpreter; the run's lifecycle is :mod:`.run_dialog`'s) and
shows its progress, loss and ETA. A cancelled run writes no model; its work folder keeps the last checkpoint for
Resume. When the run
finishes it shows the hold-out accuracy, announces the new model (:attr:`TrainDialog.model_trained`, so the Segment
dialog refreshes its list) and offers to segment the layer with it (:attr:`TrainDialog.segment_requested`, handled by
the plugin, which opens the Segment dialog with the layer and the model selected).

The new model goes into the profile's models folder (:func:`.model_catalog.user_models_dir`), where the Segment
dialog and the model manager find it; the work folder ``<name>_finetune`` sits next to it.

The labelling loop, after a run: **Where to label next** (:mod:`.label_next`) suggests squares of the run's raster
where labels would help the new model most, away from the labels layer, as a numbered layer in the labels' CRS
(``<raster>_suggestions[_N].gpkg`` in the run's work folder); **Continue training** fine-tunes again from the new
model (``--init``) with the same labels layer as it is now (grown by the analyst) and the same options, under the
next free name (``<name>_2``, ``<name>_3``, ...), and shows the hold-out figures of both models side by side.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import QgsFieldProxyModel, QgsMapLayerProxyModel, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import model_catalog, plugin_settings
from .dialog_widgets import FittedLabel, ModelCombo, device_combo, save_device
from .engine_locator import training_available
from .engine_runner import EngineRunner
from .label_next import LabelNextRow, suggest_run
from .layer_inputs import (
    LABELS_FILE_NAME,
    LayerExportError,
    categorized_classes,
    layer_file_path,
    vector_file_path,
    write_run_inputs,
)
from .model_catalog import bundled_start_model, holdout_of, list_models, read_entry
from .parameters import InvalidParametersError
from .progress_stream import DoneEvent, ProgressEvent
from .run_dialog import MESSAGE_TITLE, RunDialog
from .suggest_parameters import free_suggestions_path
from .train_parameters import (
    CLASSES_FILE_NAME,
    DEFAULT_VAL_FRACTION,
    MAX_BATCH_SIZE,
    MAX_ITERATIONS,
    MAX_TILE,
    RSP_BACKBONE_ARCHS,
    TILE_MULTIPLE,
    TRAINING_MODULE,
    StartKind,
    TrainParameters,
    default_iterations,
    has_unfinished_run,
    model_name_problem,
    model_path_for,
    resumable_labels,
    safe_model_name,
    work_folder_for,
)
from .train_results import SWATCH, HoldoutFigures, progress_text, results_html

START_LABELS = {StartKind.MODEL: "A model", StartKind.BACKBONE: "An RSP backbone file (pretraining checkpoint)"}
FIND_ARCH_LABEL = "Find from the file"
BACKBONE_FILTER = "RSP pretraining checkpoints (*.pth *.pt);;All files (*)"
_ROUND = re.compile(r"(.+)_(\d+)")  # a continued model's name: <first model's name>_<n>


def _alive(layer: Any) -> Any:
    """``layer``, or None when it was deleted (removed from the project) since it was kept."""
    try:
        return layer if layer is not None and layer.isValid() else None
    except RuntimeError:  # the C++ layer is gone
        return None


@dataclass(frozen=True)
class FinishedRun:
    """The last run that wrote a model: what Where to label next and Continue training start from.

    Attributes:
        params: its parameters.
        model: the model file it wrote.
        raster: the raster layer it trained on.
        labels: the labels layer (the same layer object: the analyst grows it).
        selected_only: it trained on the selected features only.
        figures: its hold-out figures (the "previous" column after Continue training).
        continued: it was itself a Continue training run (its name ends in ``_<n>``).
    """

    params: TrainParameters
    model: str
    raster: Any
    labels: Any
    selected_only: bool
    figures: HoldoutFigures
    continued: bool


class TrainDialog(RunDialog):
    """Non-modal dialog; one training run at a time.

    Signals:
        model_trained(str): a run finished and wrote this model file.
        segment_requested(object, str): the analyst asked to segment this raster layer with this model file.
    """

    model_trained = pyqtSignal(str)
    segment_requested = pyqtSignal(object, str)

    FAILED_TITLE = "Training failed"
    STARTING_TEXT = "Starting the training…"
    CANCELLED_TEXT = "Cancelled; no model was written."
    CANCELLED_MESSAGE = "Training cancelled; no model was written."

    def __init__(self, iface: Any, parent: Any = None) -> None:
        super().__init__(iface, parent)
        self.setWindowTitle("Train model – RSP Segmentation")
        self.setObjectName("rspTrainDialog")
        self.setMinimumWidth(600)
        self.trained_model: str | None = None
        self._run_layer: QgsRasterLayer | None = None
        self._auto_iterations: int | None = None
        self._auto_name = ""
        self._watched_labels: QgsVectorLayer | None = None  # its style changes update the classes
        self._run_labels: QgsVectorLayer | None = None
        self._run_selected = False
        self.last_run: FinishedRun | None = None  # the last run that wrote a model
        self._next_previous: HoldoutFigures | None = None  # set by Continue training for the run it starts
        self._run_previous: HoldoutFigures | None = None  # the model the running run continues, if any
        self._build()
        self.refresh()

    # -- widgets ---------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = self._dialog_layout()
        form = QFormLayout()
        self.raster_combo = QgsMapLayerComboBox(self)
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setObjectName("rasterCombo")
        form.addRow("Raster layer", self.raster_combo)
        self.labels_combo = QgsMapLayerComboBox(self)
        self.labels_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.labels_combo.setObjectName("labelsCombo")
        self.labels_combo.setToolTip("Polygons you digitised over the raster, any CRS; only labelled pixels train")
        form.addRow("Labels layer", self.labels_combo)
        self.selected_check = QCheckBox("Selected features only", self)
        form.addRow("", self.selected_check)
        self.field_combo = QgsFieldComboBox(self)
        self.field_combo.setFilters(QgsFieldProxyModel.String | QgsFieldProxyModel.Int | QgsFieldProxyModel.LongLong)
        self.field_combo.setObjectName("classFieldCombo")
        form.addRow("Class field", self.field_combo)
        self.classes_label = FittedLabel(self)
        self.classes_label.setObjectName("classesLabel")
        form.addRow("Classes", self.classes_label)

        self.start_combo = QComboBox(self)
        for kind, label in START_LABELS.items():
            self.start_combo.addItem(label, kind.value)
        form.addRow("Start from", self.start_combo)
        self.model_combo = ModelCombo(self)
        self.model_combo.setObjectName("startModelCombo")
        form.addRow("Model", self.model_combo)
        backbone_row = QHBoxLayout()
        self.backbone_file = QgsFileWidget(self)
        self.backbone_file.setStorageMode(QgsFileWidget.GetFile)
        self.backbone_file.setFilter(BACKBONE_FILTER)
        self.arch_combo = QComboBox(self)
        self.arch_combo.addItem(FIND_ARCH_LABEL, None)
        for arch in RSP_BACKBONE_ARCHS:
            self.arch_combo.addItem(arch, arch)
        backbone_row.addWidget(self.backbone_file, 1)
        backbone_row.addWidget(self.arch_combo)
        form.addRow("Backbone file", backbone_row)
        self.iterations_spin = QSpinBox(self)
        self.iterations_spin.setRange(1, MAX_ITERATIONS)
        self.iterations_spin.setObjectName("iterationsSpin")
        form.addRow("Iterations", self.iterations_spin)
        self.device_combo = device_combo(self)
        form.addRow("Device", self.device_combo)
        self.name_edit = QLineEdit(self)
        self.name_edit.setObjectName("modelNameEdit")
        self.name_edit.setToolTip("The new model's file name in the models folder (letters, digits, _ - .)")
        form.addRow("New model name", self.name_edit)
        self.path_label = FittedLabel(self)
        form.addRow("", self.path_label)
        self.resume_check = QCheckBox("Resume the interrupted run", self)
        self.resume_check.setToolTip(
            "Continue from the last checkpoint in the model's work folder, with the labels and options it started with"
        )
        self.overwrite_check = QCheckBox("Replace an existing model of this name", self)
        checks = QHBoxLayout()
        checks.addWidget(self.resume_check)
        checks.addWidget(self.overwrite_check)
        checks.addStretch(1)
        form.addRow("", checks)
        layout.addLayout(form)

        advanced = QgsCollapsibleGroupBox("Advanced", self)
        advanced.setCollapsed(True)
        adv_form = QFormLayout(advanced)
        self.batch_spin = QSpinBox(self)
        self.batch_spin.setRange(0, MAX_BATCH_SIZE)
        self.batch_spin.setSpecialValueText("architecture's default")
        adv_form.addRow("Batch size", self.batch_spin)
        self.tile_spin = QSpinBox(self)
        self.tile_spin.setRange(0, MAX_TILE)
        self.tile_spin.setSingleStep(TILE_MULTIPLE)
        self.tile_spin.setSpecialValueText("start model's / architecture's default")
        self.tile_spin.setSuffix(" px")
        adv_form.addRow("Tile size", self.tile_spin)
        self.val_spin = QDoubleSpinBox(self)
        self.val_spin.setRange(0.05, 0.5)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(DEFAULT_VAL_FRACTION)
        adv_form.addRow("Held-out share of the labelled area", self.val_spin)
        self.freeze_check = QCheckBox("Train the heads only (freeze the backbone)", self)
        adv_form.addRow("", self.freeze_check)
        self.advanced_box = advanced
        layout.addWidget(advanced)

        self.results_label = QLabel("", self)
        self.results_label.setTextFormat(Qt.RichText)
        self.results_label.setObjectName("resultsLabel")
        self.results_label.setWordWrap(True)  # long warnings wrap instead of running past the dialog
        self.results_label.hide()
        self.segment_button = QPushButton("Segment with the new model", self)
        self.segment_button.setObjectName("segmentWithNewModelButton")
        self.segment_button.hide()
        self.label_next = LabelNextRow(self, with_continue=True)
        below_status = QWidget(self)
        below_layout = QVBoxLayout(below_status)
        below_layout.setContentsMargins(0, 0, 0, 0)
        below_layout.addWidget(self.results_label)
        below_layout.addWidget(self.label_next)
        self._add_run_controls(layout, self.segment_button, below_status=below_status)

        self.raster_combo.layerChanged.connect(self._on_raster_changed)
        self.labels_combo.layerChanged.connect(self._on_labels_changed)
        self.field_combo.fieldChanged.connect(self._update_classes)
        self.start_combo.currentIndexChanged.connect(self._on_start_changed)
        self.model_combo.currentIndexChanged.connect(self._on_start_changed)
        self.arch_combo.currentIndexChanged.connect(self._on_start_changed)
        self.name_edit.textChanged.connect(self._update_output)
        self.overwrite_check.toggled.connect(self._update_enabled)
        self.segment_button.clicked.connect(self._request_segment)
        self.label_next.suggest_button.clicked.connect(self.where_to_label_next)
        assert self.label_next.continue_button is not None
        self.label_next.continue_button.clicked.connect(self.continue_training)

    # -- state -----------------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the list of start models (the Segment dialog's list), keeping the choice; re-check the output."""
        current = self.model_combo.currentData() or plugin_settings.get_value("train_start_model", "")
        self.model_combo.set_models(list_models(), current, default=bundled_start_model() or "")
        self._on_raster_changed()
        self._on_labels_changed()
        self._on_start_changed()

    def start_kind(self) -> StartKind:
        """A model file or an RSP backbone file, as chosen."""
        return StartKind(self.start_combo.currentData())

    def output_model_path(self) -> str:
        """The new model's file in the profile's models folder ("" while the name is not valid)."""
        name = self.name_edit.text().strip()
        return "" if model_name_problem(name) else model_path_for(name, str(model_catalog.user_models_dir()))

    def _on_raster_changed(self, *_args: Any) -> None:
        layer = self.raster_combo.currentLayer()
        name = self.name_edit.text().strip()
        if layer is not None and (not name or name == self._auto_name):
            self._auto_name = self._free_name(safe_model_name(f"{layer.name()}_finetuned"))
            self.name_edit.setText(self._auto_name)
        self._update_output()

    def _free_name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``, ... : the first name that no model (installed or bundled) has yet.

        A name whose run was interrupted is free (its model file does not exist), so Resume is offered for it.
        """
        taken = {e.name for e in list_models()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        return name

    def _on_labels_changed(self, *_args: Any) -> None:
        layer = self.labels_combo.currentLayer()
        if self._watched_labels is not None:
            with contextlib.suppress(TypeError, RuntimeError):  # not connected, or the layer is gone
                self._watched_labels.rendererChanged.disconnect(self._update_classes)
        self._watched_labels = layer if isinstance(layer, QgsVectorLayer) else None
        if self._watched_labels is not None:
            self._watched_labels.rendererChanged.connect(self._update_classes)
        self.field_combo.setLayer(layer)
        renderer = layer.renderer() if isinstance(layer, QgsVectorLayer) else None
        field = getattr(renderer, "classAttribute", lambda: "")()
        if field and self.field_combo.findText(field) >= 0:  # the field the layer is styled by
            self.field_combo.setField(field)
        self._update_classes()

    def _update_classes(self, *_args: Any) -> None:
        layer = self.labels_combo.currentLayer()
        field = self.field_combo.currentField()
        classes = categorized_classes(layer, field) if field else None
        if classes:
            swatches = " &nbsp; ".join(
                f"<span style='background-color:rgb({r},{g},{b});'>{SWATCH}</span>&nbsp;"
                + html.escape(name).replace(" ", "&nbsp;")
                for name, (r, g, b), _value in classes
            )
            self.classes_label.setText(f"{swatches} &nbsp; <i>(the layer's categorised style)</i>")
        elif field:
            self.classes_label.setText(
                f"<i>the values of {html.escape(field)}, sorted; colours chosen by the training package "
                "(style the layer by categories of this field to choose names and colours)</i>"
            )
        else:
            self.classes_label.setText("<i>choose the labels layer and its class field</i>")

    def _on_start_changed(self, *_args: Any) -> None:
        kind = self.start_kind()
        self.model_combo.setEnabled(kind is StartKind.MODEL)
        self.backbone_file.setEnabled(kind is StartKind.BACKBONE)
        self.arch_combo.setEnabled(kind is StartKind.BACKBONE)
        self.freeze_check.setEnabled(True)
        entry = self.model_combo.current_model()
        if kind is StartKind.MODEL:
            arch = entry.info.arch if entry is not None and entry.info is not None else None
            iterations = default_iterations(arch) if arch else default_iterations("lite_resnet")
        else:
            iterations = default_iterations(self.arch_combo.currentData())
        if self._auto_iterations is None or self.iterations_spin.value() == self._auto_iterations:
            self.iterations_spin.setValue(iterations)  # follows the start until the analyst sets a number
        self._auto_iterations = iterations
        self._update_enabled()

    def _update_output(self, *_args: Any) -> None:
        name = self.name_edit.text().strip()
        problem = model_name_problem(name)
        path = self.output_model_path()
        if problem:
            self.path_label.setText(f"<span style='color:#b00'>{html.escape(problem)}</span>")
        else:
            note = " (exists)" if os.path.exists(path) else ""
            folder, work = Path(path).parent.name, Path(work_folder_for(path)).name
            self.path_label.setText(
                f"<small>{html.escape(Path(path).name)}{note} in {html.escape(folder)}/ of the QGIS profile (the "
                f"model lists read it); checkpoints and reports in {html.escape(work)}/ next to it</small>"
            )
        self.path_label.setToolTip(f"{path}\n{work_folder_for(path)}" if path else "")
        unfinished = bool(path) and has_unfinished_run(path)
        self.resume_check.setEnabled(unfinished)
        self.resume_check.setChecked(unfinished)
        self.overwrite_check.setEnabled(bool(path) and os.path.exists(path))
        if not self.overwrite_check.isEnabled():
            self.overwrite_check.setChecked(False)
        self._update_enabled()

    def _save_settings(self) -> None:
        entry = self.model_combo.current_model()
        plugin_settings.set_value("train_start_model", entry.path if entry else "")
        save_device(self.device_combo)

    # -- parameters ------------------------------------------------------------------------------------------------

    def gather_parameters(self) -> TrainParameters:
        """Read the widgets into a :class:`TrainParameters`, writing nothing (see :meth:`prepare_run`).

        The labels path is the labels layer's own file when it is a plain single-layer file and all features are
        wanted; otherwise it is the export this run will write into its work folder (or, on Resume, the export the
        interrupted run read). ``classes_json`` is the work folder's ``classes.json`` when the labels layer is styled
        by categories of the class field.
        """
        output = self.output_model_path()
        work = work_folder_for(output) if output else ""
        labels = self.labels_combo.currentLayer()
        field = self.field_combo.currentField()
        resume = self.resume_check.isEnabled() and self.resume_check.isChecked()
        labels_path = ""
        if isinstance(labels, QgsVectorLayer) and work:
            own = "" if self.selected_check.isChecked() else vector_file_path(labels)
            labels_path = (resume and resumable_labels(work)) or own or os.path.join(work, LABELS_FILE_NAME)
        classes = categorized_classes(labels, field) if field else None
        entry = self.model_combo.current_model()
        kind = self.start_kind()
        return TrainParameters(
            raster_path=layer_file_path(self.raster_combo.currentLayer()),
            labels_path=labels_path,
            class_field=field,
            output_model=output,
            start=kind,
            init_model=entry.path if kind is StartKind.MODEL and entry and entry.info is not None else "",
            backbone=self.backbone_file.filePath().strip() if kind is StartKind.BACKBONE else "",
            arch=self.arch_combo.currentData() if kind is StartKind.BACKBONE else None,
            iterations=self.iterations_spin.value(),
            device=self.device_combo.currentText(),
            batch_size=self.batch_spin.value() or None,
            tile=self.tile_spin.value() or None,
            classes_json=os.path.join(work, CLASSES_FILE_NAME) if classes and work else None,
            work_dir=work or None,
            resume=resume,
            freeze_backbone=self.freeze_check.isChecked(),
            val_fraction=None if abs(self.val_spin.value() - DEFAULT_VAL_FRACTION) < 1e-9 else self.val_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
        )

    def prepare_run(self) -> TrainParameters:
        """Check everything, then write the run's inputs into its work folder; return the parameters to run.

        Nothing is written when a check fails. Written: the labels export (when :meth:`gather_parameters` planned
        one) and ``classes.json`` from the labels layer's categorised style.

        Raises:
            InvalidParametersError: what to fix, one problem per line.
        """
        params = self.gather_parameters()
        problems = []
        if not training_available():
            problems.append("The training package is missing from the plugin folder: reinstall the plugin zip.")
        name_problem = model_name_problem(self.name_edit.text().strip())
        if name_problem:
            problems.append(name_problem)
        elif any(e.bundled and e.name == self.name_edit.text().strip() for e in self.model_combo.models):
            problems.append("A model bundled with the plugin has this name: choose another name.")
        if self.selected_check.isChecked() and not self._selected_count():
            problems.append("No feature of the labels layer is selected: select labels, or untick 'Selected only'.")
        problems += params.problems(inputs_pending=True)
        if problems:
            raise InvalidParametersError("\n".join(dict.fromkeys(problems)))
        try:
            write_run_inputs(params, self.labels_combo.currentLayer(), self.selected_check.isChecked())
        except LayerExportError as exc:
            raise InvalidParametersError(str(exc)) from exc
        params.validate()
        return params

    def _selected_count(self) -> int:
        layer = self.labels_combo.currentLayer()
        return layer.selectedFeatureCount() if isinstance(layer, QgsVectorLayer) else 0

    # -- running ---------------------------------------------------------------------------------------------------

    def _checked_parameters(self) -> TrainParameters:
        return self.prepare_run()

    def _update_enabled(self, *_args: Any) -> None:
        super()._update_enabled()
        self.label_next.setEnabled(self.runner is None)

    def _new_runner(self, params: TrainParameters) -> EngineRunner:
        self._run_layer = self.raster_combo.currentLayer()
        self._run_labels = self.labels_combo.currentLayer()
        self._run_selected = self.selected_check.isChecked()
        self._run_previous, self._next_previous = self._next_previous, None
        self.trained_model = None
        self.results_label.hide()
        self.segment_button.hide()
        self.label_next.hide()
        runner = EngineRunner(
            plugin_settings.interpreter(), params.finetune_args(), params.output_paths(), self, module=TRAINING_MODULE
        )
        runner.other.connect(self._on_event)
        return runner

    def _task_title(self, params: TrainParameters) -> str:
        return f"Training {Path(params.output_model).stem}"

    def _progress_text(self, event: ProgressEvent) -> str:
        return progress_text(event)

    def _on_event(self, event: Any) -> None:
        if event.name == "start":
            raw = event.raw
            self.status_label.setText(
                f"Training {raw.get('iterations', '?')} iterations on {raw.get('chips', '?')} chips of "
                f"{len(raw.get('classes') or [])} classes; {raw.get('holdout_blocks', '?')} blocks held out for the "
                "accuracy figures."
            )

    def _finish(self, ok: bool) -> None:
        super()._finish(ok)
        self._update_output()  # the model now exists (Replace), or an unfinished run (Resume)
        self.label_next.setVisible(self.last_run is not None)  # a failed run leaves the last model to go on from

    def _on_done(self, event: DoneEvent) -> None:
        params = self._run_params
        assert params is not None
        self._finish(True)
        self.progress.setValue(100)
        path = str(event.raw.get("model") or event.outputs.get("model") or params.output_model)
        self.trained_model = path
        entry = read_entry(path)
        colors = dict(zip(entry.info.class_names, entry.info.colors, strict=True)) if entry.info else {}
        holdout = holdout_of(entry.info) or {}
        figures = HoldoutFigures(
            entry.name, dict(event.raw.get("metrics") or {}), event.raw.get("majority"), holdout.get("holdout_pixels")
        )
        self.results_label.setText(
            results_html(
                entry.name,
                figures.metrics,
                list(event.raw.get("per_class") or []),
                colors,
                figures.holdout_pixels,
                figures.majority,
                list(event.raw.get("warnings") or []),
                previous=self._run_previous,
                refit=bool(event.raw.get("refit")),
            )
        )
        self.results_label.show()
        self.last_run = FinishedRun(
            params, path, self._run_layer, self._run_labels, self._run_selected, figures, self._run_previous is not None
        )
        self.label_next.show()
        seconds = event.raw.get("seconds")
        took = f" in {float(seconds):.0f} s" if isinstance(seconds, int | float) else ""
        report = event.outputs.get("report", "")
        self.status_label.setText(
            f"Done{took}: {entry.name} is in the model list. Report and confusion matrix: "
            f"{Path(report).parent.name}/ next to the model."
        )
        self.status_label.setToolTip(f"{path}\n{report}")
        layer = self._run_layer
        layer_name = layer.name() if layer is not None else "the layer"
        self.segment_button.setText(f"Segment {layer_name} with the new model")
        self.segment_button.setEnabled(layer is not None)
        self.segment_button.show()
        self._auto_name = ""  # keep showing the new model's name (now with 'Replace' available)
        self.model_trained.emit(path)
        self.refresh()
        self.iface.messageBar().pushSuccess(MESSAGE_TITLE, f"Trained {entry.name}: it is in the model list.")

    def _cancelled_text(self) -> str:
        resumable = " Tick 'Resume' to continue from the last checkpoint." if self.resume_check.isEnabled() else ""
        return f"{self.CANCELLED_TEXT}{resumable}"

    def _request_segment(self) -> None:
        if self.trained_model and self._run_layer is not None:
            self.segment_requested.emit(self._run_layer, self.trained_model)

    # -- the labelling loop ----------------------------------------------------------------------------------------

    def _cannot(self, problem: str) -> bool:
        self.message_bar.pushWarning("Cannot run", problem.replace("\n", " "))
        self.status_label.setText(problem)
        return False

    def where_to_label_next(self) -> bool:
        """Suggest squares to label on the last run's raster with its new model, away from the labels layer (a side
        run); False (with the reason shown) when it cannot start."""
        last = self.last_run
        if last is None or self.runner is not None:
            return False
        raster = _alive(last.raster)
        name = raster.name() if raster is not None else Path(last.params.raster_path).stem
        output = free_suggestions_path(last.params.work_folder, Path(last.params.raster_path).stem)
        try:
            side = suggest_run(
                self.iface, last.model, last.params.raster_path, f"Where to label next – {name}", output,
                self.label_next, _alive(last.labels), last.params.class_field, last.params.device,
            )  # fmt: skip
        except InvalidParametersError as exc:
            return self._cannot(str(exc))
        return self.start_side_run(side)

    def continuation_name(self) -> str:
        """The next free name in the last run's series: ``<first name>_2``, ``_3``, ..."""
        assert self.last_run is not None
        name = Path(self.last_run.model).stem
        match = _ROUND.fullmatch(name)
        return self._free_name(match.group(1) if self.last_run.continued and match else name)

    def continue_training(self) -> bool:
        """Fine-tune again from the last run's model (``--init``) on the same raster and labels layer (as it is now)
        with the same options, under :meth:`continuation_name`; the result compares both models.

        The widgets are set to that run, so the dialog shows what runs. Returns False (with the reason shown) when
        the run cannot start.
        """
        last = self.last_run
        if last is None or self.runner is not None:
            return False
        raster, labels = _alive(last.raster), _alive(last.labels)
        if raster is None or labels is None:
            return self._cannot("The raster or labels layer of the last run was removed from the project.")
        p = last.params
        self.start_combo.setCurrentIndex(self.start_combo.findData(StartKind.MODEL.value))
        if self.model_combo.findData(last.model) < 0:
            self.refresh()
        index = self.model_combo.findData(last.model)
        if index < 0:
            return self._cannot(f"The last model is no longer in the models folder: {last.model}")
        self.model_combo.setCurrentIndex(index)
        self.raster_combo.setLayer(raster)
        self.labels_combo.setLayer(labels)
        self.field_combo.setField(p.class_field)
        self.selected_check.setChecked(last.selected_only)
        if p.iterations is not None:
            self.iterations_spin.setValue(p.iterations)
        self.device_combo.setCurrentText(p.device)
        self.batch_spin.setValue(p.batch_size or 0)
        self.tile_spin.setValue(p.tile or 0)
        self.val_spin.setValue(DEFAULT_VAL_FRACTION if p.val_fraction is None else p.val_fraction)
        self.freeze_check.setChecked(p.freeze_backbone)
        self.name_edit.setText(self.continuation_name())
        self.resume_check.setChecked(False)  # a fresh run, even where an interrupted one of that name was left
        self.overwrite_check.setChecked(False)
        self._next_previous = last.figures
        if not self.run():
            self._next_previous = None
            return False
        return True
