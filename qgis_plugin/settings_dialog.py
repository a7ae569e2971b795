"""Settings: the engine's Python interpreter, with Check environment and Compile ahead (``engine warmup``)."""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from . import plugin_settings
from .engine_locator import default_interpreter
from .engine_runner import EngineRunner
from .environment_check import check_environment
from .model_catalog import list_models
from .parameters import DEFAULT_BATCH_SIZE
from .progress_stream import DoneEvent
from .web_layers import max_web_pixels

COMPILE_BUTTON = "Compile ahead"
COMPILE_TIP = (
    "Compile the model's network now (1-2 minutes once per model, batch size and precision) so that every later run, "
    "even of a small raster, can use the compiled network; runs then compile from the cache in about 10 seconds."
)


class SettingsDialog(QDialog):
    """Settings: choose the engine's Python interpreter and check its environment."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RSP Segmentation settings")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.interpreter = QgsFileWidget(self)
        self.interpreter.setStorageMode(QgsFileWidget.GetFile)
        self.interpreter.setFilePath(plugin_settings.interpreter())
        form.addRow("Engine Python interpreter", self.interpreter)
        form.addRow("", QLabel(f"Default when empty: {default_interpreter()}", self))
        self.max_web = QSpinBox(self)
        self.max_web.setObjectName("maxWebMegapixels")
        self.max_web.setRange(1, 100_000)
        self.max_web.setSuffix(" million pixels")
        self.max_web.setValue(max_web_pixels() // 1_000_000)
        self.max_web.setToolTip("Largest extent of a web layer (XYZ, WMS) a run may download, at the GSD used")
        form.addRow("Largest web layer download", self.max_web)
        layout.addLayout(form)
        self.report = QLabel("", self)
        self.report.setWordWrap(True)
        self.report.setTextInteractionFlags(self.report.textInteractionFlags() | 1)  # selectable fix command
        layout.addWidget(self.report)
        check = QPushButton("Check environment", self)
        check.clicked.connect(self.run_check)
        layout.addWidget(check)
        warm_row = QHBoxLayout()
        self.warm_model = QComboBox(self)
        self.warm_model.setObjectName("warmupModel")
        for entry in list_models():
            if entry.info is not None:
                self.warm_model.addItem(entry.name, entry.path)
        self.warm_button = QPushButton(COMPILE_BUTTON, self)
        self.warm_button.setObjectName("warmupButton")
        self.warm_button.setToolTip(COMPILE_TIP)
        self.warm_button.clicked.connect(self.toggle_warmup)
        warm_row.addWidget(QLabel("Model", self))
        warm_row.addWidget(self.warm_model, 1)
        warm_row.addWidget(self.warm_button)
        layout.addLayout(warm_row)
        self.warm_status = QLabel("", self)
        self.warm_status.setObjectName("warmupStatus")
        self.warm_status.setWordWrap(True)
        layout.addWidget(self.warm_status)
        self._warm_runner: EngineRunner | None = None
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def run_check(self) -> None:
        """Run Check environment on the interpreter in the field and show the report."""
        QApplication.setOverrideCursor(3)  # Qt.WaitCursor
        try:
            self.report.setText(
                check_environment(self.interpreter.filePath().strip() or default_interpreter()).as_html()
            )
        finally:
            QApplication.restoreOverrideCursor()

    def toggle_warmup(self) -> None:
        """Start ``python -m engine warmup`` for the chosen model (batch size as in the Segment dialog), or stop it."""
        if self._warm_runner is not None and self._warm_runner.is_running():
            self._warm_runner.cancel()
            return
        path = self.warm_model.currentData()
        if not path:
            self.warm_status.setText("No model installed: add one in the Model manager first.")
            return
        batch = str(plugin_settings.get_value("batch_size", DEFAULT_BATCH_SIZE, int))
        precision = str(plugin_settings.get_value("precision", "auto"))
        args = ["warmup", "--model", path, "--batch-size", batch, "--precision", precision]
        interpreter = self.interpreter.filePath().strip() or default_interpreter()
        runner = EngineRunner(interpreter, args, [], self)
        runner.status.connect(lambda message: self.warm_status.setText(f"{message} (1-2 minutes the first time)…"))
        runner.finished_ok.connect(self._warmup_done)
        runner.failed.connect(lambda message, hint: self._warmup_ended(f"Compiling failed: {message} {hint}"))
        runner.canceled.connect(lambda: self._warmup_ended("Stopped; nothing was recorded."))
        self._warm_runner = runner
        self.warm_button.setText("Stop")
        self.warm_status.setText("Loading the model…")
        runner.start()

    def _warmup_done(self, done: DoneEvent) -> None:
        raw = done.raw
        self._warmup_ended(
            f"Compiled {self.warm_model.currentText()} ({raw.get('precision')}): "
            f"{raw.get('eager_s')} s per window before, {raw.get('compiled_s')} s compiled "
            f"(compilation took {raw.get('compile_s')} s, {raw.get('cache')} cache). Runs now compile when it pays off."
        )

    def _warmup_ended(self, message: str) -> None:
        self.warm_status.setText(message)
        self.warm_button.setText(COMPILE_BUTTON)

    def reject(self) -> None:
        """Close; a compile still running is stopped."""
        if self._warm_runner is not None and self._warm_runner.is_running():
            self._warm_runner.cancel()
            self._warm_runner.wait(10_000)
        super().reject()

    def save(self) -> None:
        """Save the interpreter and the web download limit, and close."""
        plugin_settings.set_interpreter(self.interpreter.filePath())
        plugin_settings.set_value("max_web_megapixels", self.max_web.value())
        self.accept()
