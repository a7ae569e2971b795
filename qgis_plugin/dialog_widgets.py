"""Widgets and small widget behaviours the plugin's dialogs share.

Owns: the save-file widget for an output (:func:`output_file_widget`), the word-wrapped label whose height follows
its text (:class:`FittedLabel`, the model box), the model choice (:class:`ModelCombo`), the device choice that
remembers the last device and follows the environment check (:func:`device_combo`, :func:`apply_cuda_availability`)
and the *Check environment* message box (:func:`show_environment_report`). Nothing here knows about a particular
run; the dialogs build their forms from these.
"""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QComboBox, QLabel, QMessageBox, QWidget

from . import plugin_settings
from .environment_check import check_environment
from .model_catalog import ModelEntry
from .parameters import DEVICES

CUDA_DEVICE = "cuda"
CPU_DEVICE = "cpu"
CUDA_SETTING = "cuda_available"
DEVICE_SETTING = "device"


def output_file_widget(parent: QWidget, file_filter: str) -> QgsFileWidget:
    """A file widget for an output the run will write.

    Args:
        parent: the owning widget.
        file_filter: the file dialog's filter, e.g. ``"GeoTIFF (*.tif *.tiff)"``.

    Returns:
        A save-file widget that does not ask to confirm overwriting (the dialog's Overwrite checkbox decides).
    """
    widget = QgsFileWidget(parent)
    widget.setStorageMode(QgsFileWidget.SaveFile)
    widget.setFilter(file_filter)
    widget.setConfirmOverwrite(False)
    return widget


class FittedLabel(QLabel):
    """A word-wrapped rich-text label whose minimum height is what its text needs at its real width.

    A word-wrapped label in a form keeps the height of its first layout and clipped its last lines; this one refits
    its minimum height when its text changes, when it is resized, and once after it is shown (when the layout has
    given it its width).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextFormat(Qt.RichText)
        self.setAlignment(Qt.AlignLeft | Qt.AlignTop)

    def fit(self) -> None:
        """Set the minimum height to the text's height at the current width (only when visible)."""
        if self.isVisible():  # hidden labels are laid out at a provisional, narrow width
            self.setMinimumHeight(self.heightForWidth(self.width()))

    def setText(self, text: str) -> None:
        """Set the text and refit the height."""
        super().setText(text)
        self.fit()

    def showEvent(self, event: Any) -> None:
        """Refit once the layout has given the shown label its width."""
        super().showEvent(event)
        QTimer.singleShot(0, self.fit)  # once the layout has given the label its width

    def resizeEvent(self, event: Any) -> None:
        """Refit to the new width."""
        super().resizeEvent(event)
        self.fit()


class ModelCombo(QComboBox):
    """A choice of model: each listed model by name, its file's path as item data.

    Attributes:
        models: the listed models, in the combo box's order.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models: list[ModelEntry] = []

    def set_models(self, models: list[ModelEntry], current: str, default: str = "") -> None:
        """List ``models`` and choose one, without emitting a change signal.

        Args:
            models: the models to list; one whose metadata cannot be read is marked "(unreadable)".
            current: the path of the model to choose ("" for none).
            default: the path of the model chosen when ``current`` is not listed; else the first is.
        """
        self.models = list(models)
        self.blockSignals(True)
        self.clear()
        for entry in self.models:
            label = entry.name if entry.info is not None else f"{entry.name} (unreadable)"
            self.addItem(label, entry.path)
        index = self.findData(current) if current else -1
        if index < 0:
            index = max(self.findData(default) if default else -1, 0)
        self.setCurrentIndex(index)
        self.blockSignals(False)

    def current_model(self) -> ModelEntry | None:
        """The chosen model, None when none is listed."""
        index = self.currentIndex()
        return self.models[index] if 0 <= index < len(self.models) else None


def device_combo(parent: QWidget) -> QComboBox:
    """The device choice (``cpu``, ``cuda``), set to the device last used.

    CUDA is disabled once *Check environment* has found no GPU (see :func:`apply_cuda_availability`); a dialog
    remembers the choice with :func:`save_device` when a run starts.
    """
    combo = QComboBox(parent)
    combo.addItems(list(DEVICES))
    combo.setCurrentText(str(plugin_settings.get_value(DEVICE_SETTING, CPU_DEVICE)))
    apply_cuda_availability(combo, plugin_settings.get_value(CUDA_SETTING, None))
    return combo


def save_device(combo: QComboBox) -> None:
    """Remember the chosen device for the next dialog (see :func:`device_combo`)."""
    plugin_settings.set_value(DEVICE_SETTING, combo.currentText())


def apply_cuda_availability(device_combo: QComboBox, available: Any) -> None:
    """Disable the CUDA choice of a device combo once *Check environment* has found no GPU.

    Args:
        device_combo: a combo box listing ``"cpu"`` and ``"cuda"``.
        available: the check's finding: a bool, or the string QgsSettings may hand back (``"true"``/``"false"``);
            None (no check yet) leaves the combo as it is.
    """
    if available is None:
        return
    available = str(available).lower() in ("true", "1")
    item = device_combo.model().item(device_combo.findText(CUDA_DEVICE))
    item.setEnabled(available)
    item.setToolTip("" if available else "Check environment found no CUDA GPU for the engine interpreter")
    if not available and device_combo.currentText() == CUDA_DEVICE:
        device_combo.setCurrentText(CPU_DEVICE)


def show_environment_report(parent: QWidget, device_combo: QComboBox | None = None) -> None:
    """Run *Check environment* on the configured interpreter (wait cursor) and show its report in a message box.

    Whether CUDA is available is remembered in the plugin settings (``cuda_available``) and applied to
    ``device_combo`` (see :func:`apply_cuda_availability`) before the report is shown.

    Args:
        parent: the message box's parent.
        device_combo: the dialog's device choice, if it has one.
    """
    QApplication.setOverrideCursor(Qt.WaitCursor)
    try:
        report = check_environment(plugin_settings.interpreter())
    finally:
        QApplication.restoreOverrideCursor()
    if CUDA_SETTING in report.versions:
        cuda = bool(report.versions[CUDA_SETTING])
        plugin_settings.set_value(CUDA_SETTING, cuda)
        if device_combo is not None:
            apply_cuda_availability(device_combo, cuda)
    QMessageBox.information(parent, "Check environment", report.as_html())
