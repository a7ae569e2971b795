"""Model manager: list installed and bundled models with their metadata, import, remove."""

from __future__ import annotations

import os
from typing import Any

from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from . import plugin_settings
from .engine_runner import ENGINE_MODULE, EngineRunner
from .model_catalog import ModelEntry, ModelRemoveError, format_info_html, import_command, list_models, remove_model

IMPORT_FILTER = "Model files and checkpoints (*.rspmodel *.pth *.pt *.safetensors);;All files (*)"


class ModelManagerDialog(QDialog):
    """Lists models; Import runs the engine's importer in the configured interpreter (a subprocess, like a run)."""

    engine_module = ENGINE_MODULE

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RSP models")
        self.setObjectName("rspModelManager")
        self.entries: list[ModelEntry] = []
        self.runner: EngineRunner | None = None
        self.last_error = ""
        layout = QVBoxLayout(self)
        body = QHBoxLayout()
        self.list = QListWidget(self)
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.info.setMinimumWidth(320)
        body.addWidget(self.list, 1)
        body.addWidget(self.info, 2)
        layout.addLayout(body)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)
        self.progress.hide()
        layout.addWidget(self.progress)
        buttons = QHBoxLayout()
        self.import_button = QPushButton("Import…", self)
        self.remove_button = QPushButton("Remove", self)
        close = QPushButton("Close", self)
        for button in (self.import_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.list.currentRowChanged.connect(self._show)
        self.import_button.clicked.connect(self.choose_import)
        self.remove_button.clicked.connect(self.remove_current)
        close.clicked.connect(self.accept)
        self.reload()

    def reload(self) -> None:
        """Re-read the installed and bundled models into the list (the first one selected)."""
        self.entries = list_models()
        self.list.clear()
        for entry in self.entries:
            self.list.addItem(f"{entry.name}{'  (bundled)' if entry.bundled else ''}")
        if self.entries:
            self.list.setCurrentRow(0)
        else:
            self.info.setText("No models yet. <b>Import…</b> an RSP checkpoint or a .rspmodel file.")
        self._show(self.list.currentRow())

    def _show(self, row: int) -> None:
        entry = self.entries[row] if 0 <= row < len(self.entries) else None
        if entry is not None:
            self.info.setText(format_info_html(entry))
        self.remove_button.setEnabled(entry is not None and not entry.bundled)

    def choose_import(self) -> None:
        """Ask for a checkpoint or model file and import it (:meth:`start_import`)."""
        path, _ = QFileDialog.getOpenFileName(self, "Import a model", "", IMPORT_FILTER)
        if path:
            self.start_import(path)

    def start_import(self, source: str) -> EngineRunner:
        """Run ``<python> -m engine import <source> --output <profile>/rsp_models/<name>.rspmodel``."""
        args, dest = import_command(source)
        self.runner = EngineRunner(
            plugin_settings.interpreter(), args, [dest], self, module=self.engine_module, require_done_event=False
        )
        self.runner.finished_ok.connect(
            lambda _event: (
                self._import_finished(True, dest)
                if os.path.isfile(dest)
                else self._import_finished(False, f"The importer finished but did not write {dest}.")
            )
        )
        self.runner.failed.connect(lambda message, hint: self._import_finished(False, f"{message}\n{hint}"))
        self.import_button.setEnabled(False)
        self.progress.show()
        self.runner.start()
        return self.runner

    def _import_finished(self, ok: bool, detail: str) -> None:
        self.progress.hide()
        self.import_button.setEnabled(True)
        self.runner = None
        if ok:
            self.reload()
            row = next((i for i, e in enumerate(self.entries) if e.path == detail), -1)
            self.list.setCurrentRow(row)
        else:
            self.last_error = detail
            QMessageBox.warning(self, "Import failed", detail)

    def remove_current(self) -> None:
        """Delete the selected installed model after confirmation (bundled ones cannot be removed)."""
        row = self.list.currentRow()
        if not 0 <= row < len(self.entries):
            return
        entry = self.entries[row]
        answer = QMessageBox.question(self, "Remove model", f"Delete {entry.path}?")
        if answer != QMessageBox.Yes:
            return
        try:
            remove_model(entry)
        except (ModelRemoveError, OSError) as exc:
            QMessageBox.warning(self, "Remove model", str(exc))
        self.reload()
