"""The "Segment several rasters" dialog: many layers (or a folder), one model load, each result added as it finishes.

Gathers a :class:`.batch_parameters.BatchParameters` and runs ``python -m engine batch`` in the subprocess. The
engine's ``item`` events (one per input: done, skipped or failed) add each finished result to the project, styled,
while the others run; a failed input is named in the status line and the engine goes on with the next. Opened from
the Segment layer dialog's "Several rasters…" button or the plugin's menu.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QLineEdit, QListWidget, QListWidgetItem, QPushButton

from . import plugin_settings
from .batch_parameters import BatchParameters
from .dialog_widgets import ModelCombo, device_combo, save_device
from .engine_runner import EngineRunner
from .layer_inputs import layer_file_path
from .layer_styling import add_results_to_project
from .model_catalog import ModelEntry, list_models
from .parameters import DEFAULT_BATCH_SIZE, GSD_MODEL
from .progress_stream import DoneEvent, OtherEvent, ProgressEvent
from .run_dialog import MESSAGE_TITLE, RunDialog

ITEM_EVENT = "item"  # engine.batch.ITEM


class BatchDialog(RunDialog):
    """Non-modal dialog; one batch at a time."""

    FAILED_TITLE = "Segmentation of several rasters failed"
    STARTING_TEXT = "Starting the engine…"
    CANCELLED_TEXT = "Cancelled; finished rasters were kept, the unfinished one removed."
    CANCELLED_MESSAGE = "Cancelled; finished rasters were kept."

    def __init__(self, iface: Any, parent: Any = None) -> None:
        super().__init__(iface, parent)
        self.setWindowTitle("Segment several rasters – RSP Segmentation")
        self.setMinimumWidth(560)
        self.setObjectName("rspBatchDialog")
        self._run_entry: ModelEntry | None = None
        self.added: list[str] = []  # inputs whose results were added to the project in the current run
        self.failed_inputs: list[str] = []
        layout = self._dialog_layout()
        form = QFormLayout()
        self.layer_list = QListWidget(self)
        self.layer_list.setObjectName("layerList")
        form.addRow("Raster layers", self.layer_list)
        self.folder_widget = QgsFileWidget(self)
        self.folder_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder_widget.setObjectName("folderWidget")
        form.addRow("and/or a folder", self.folder_widget)
        self.model_combo = ModelCombo(self)
        form.addRow("Model", self.model_combo)
        self.gsd_edit = QLineEdit(GSD_MODEL, self)
        self.gsd_edit.setToolTip("model (the model's GSD), native (each raster's own) or metres, e.g. 0.3")
        form.addRow("Resolution (GSD)", self.gsd_edit)
        self.device_combo = device_combo(self)
        form.addRow("Device", self.device_combo)
        self.output_dir = QgsFileWidget(self)
        self.output_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_dir.setObjectName("outputDir")
        form.addRow("Output folder", self.output_dir)
        self.vector_check = QCheckBox("Polygons (GeoPackage) too", self)
        form.addRow("", self.vector_check)
        self.mosaic_check = QCheckBox("As one mosaic (a VRT of all inputs, seamless across their borders)", self)
        form.addRow("", self.mosaic_check)
        self.overwrite_check = QCheckBox("Run again rasters whose outputs exist", self)
        form.addRow("", self.overwrite_check)
        layout.addLayout(form)
        refresh = QPushButton("Refresh layers", self)
        refresh.clicked.connect(self.refresh)
        self._add_run_controls(layout, refresh)
        self.refresh()

    def refresh(self) -> None:
        """List the project's file-backed raster layers (ticked when already ticked) and the models."""
        ticked = {self.layer_list.item(i).data(Qt.UserRole) for i in range(self.layer_list.count())
                  if self.layer_list.item(i).checkState() == Qt.Checked}  # fmt: skip
        self.layer_list.clear()
        for layer in QgsProject.instance().mapLayers().values():
            path = layer_file_path(layer) if isinstance(layer, QgsRasterLayer) else ""
            if path:
                item = QListWidgetItem(layer.name(), self.layer_list)
                item.setData(Qt.UserRole, path)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if path in ticked else Qt.Unchecked)
        current = self.model_combo.currentData() or plugin_settings.get_value("model", "")
        self.model_combo.set_models(list_models(), current)
        if not self.output_dir.filePath():
            self.output_dir.setFilePath(QgsProject.instance().homePath() or "")

    def gather_parameters(self) -> BatchParameters:
        """Read the widgets into a :class:`BatchParameters` (not validated: call ``problems()``)."""
        inputs = [self.layer_list.item(i).data(Qt.UserRole) for i in range(self.layer_list.count())
                  if self.layer_list.item(i).checkState() == Qt.Checked]  # fmt: skip
        if self.folder_widget.filePath().strip():
            inputs.append(self.folder_widget.filePath().strip())
        entry = self.model_combo.current_model()
        return BatchParameters(
            inputs=tuple(inputs),
            model_path=entry.path if entry and entry.info is not None else "",
            output_dir=self.output_dir.filePath().strip(),
            vector=self.vector_check.isChecked(),
            mosaic=self.mosaic_check.isChecked(),
            gsd=self.gsd_edit.text().strip() or GSD_MODEL,
            device=self.device_combo.currentText(),
            batch_size=DEFAULT_BATCH_SIZE,
            overwrite=self.overwrite_check.isChecked(),
        )

    def _checked_parameters(self) -> BatchParameters:
        params = self.gather_parameters()
        params.validate()
        return params

    def _save_settings(self) -> None:
        save_device(self.device_combo)

    def _new_runner(self, params: BatchParameters) -> EngineRunner:
        self._run_entry = self.model_combo.current_model()
        self.added, self.failed_inputs = [], []
        # No output paths: finished inputs are kept on cancel; the engine removes its own unfinished files.
        runner = EngineRunner(plugin_settings.interpreter(), params.engine_args(), [], self)
        runner.other.connect(self._on_other)
        return runner

    def _task_title(self, params: BatchParameters) -> str:
        return f"Segmenting {len(params.inputs)} inputs"

    def _progress_text(self, event: ProgressEvent) -> str:
        item, items = event.raw.get("item"), event.raw.get("items")
        where = f"raster {item} of {items}: " if item else ""
        return f"{where}{event.done} of {event.total} windows"

    def _on_other(self, event: OtherEvent) -> None:
        """An input finished: add its result to the project (done or skipped), or note its failure."""
        if event.name != ITEM_EVENT:
            return
        raw, entry = event.raw, self._run_entry
        name = Path(str(raw.get("input", ""))).stem
        if raw.get("status") == "failed":
            self.failed_inputs.append(name)
            self.status_label.setText(f"{name} failed: {raw.get('error', '')}")
            return
        outputs = raw.get("outputs") or {}
        if entry is None or entry.info is None or not outputs.get("labels"):
            return
        results = {"raster": outputs["labels"], "vector": outputs.get("vector", ""), "confidence": ""}
        if all(os.path.exists(p) for p in results.values() if p):
            add_results_to_project(results, entry.info.class_names, entry.info.colors, name, entry.name)
            self.added.append(name)

    def _on_done(self, event: DoneEvent) -> None:
        self._finish(True)
        self.progress.setValue(100)
        summary = event.outputs.get("summary", "")
        self.status_label.setText(f"Done: {len(self.added)} results added; summary in {summary}")
        self.iface.messageBar().pushSuccess(MESSAGE_TITLE, f"Segmented {len(self.added)} rasters")
