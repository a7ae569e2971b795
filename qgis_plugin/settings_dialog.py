"""Settings: the engine's Python interpreter, with Check environment."""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from . import plugin_settings
from .engine_locator import default_interpreter
from .environment_check import check_environment
from .web_layers import max_web_pixels


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

    def save(self) -> None:
        """Save the interpreter and the web download limit, and close."""
        plugin_settings.set_interpreter(self.interpreter.filePath())
        plugin_settings.set_value("max_web_megapixels", self.max_web.value())
        self.accept()
