"""The plugin object QGIS creates: toolbar buttons and Raster-menu entries "Segment layer" and "Train model", the
model manager, the settings entry and the Processing provider.

Everything heavy (the dialog, the runner, Processing) is imported when first used, not at QGIS start-up.
"""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .plugin_paths import icon_path

MENU_NAME = "&RSP Segmentation"
SEGMENT_ACTION_TEXT = "Segment layer"
SEGMENT_ACTION_OBJECT_NAME = "rspSegmentLayerAction"
BATCH_ACTION_OBJECT_NAME = "rspSegmentSeveralAction"  # the Segment dialog's "Several rasters…" triggers it
TRAIN_ACTION_TEXT = "Train model"
TRAIN_ACTION_OBJECT_NAME = "rspTrainModelAction"
TOOLBAR_OBJECT_NAME = "rspSegmentationToolbar"


class RspSegmentationPlugin:
    """Owns the GUI entries; opens the dialogs on demand."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.segment_action: QAction | None = None
        self.train_action: QAction | None = None
        self.toolbar: Any = None
        self.dialog: Any = None
        self.batch_dialog: Any = None
        self.train_dialog: Any = None
        self.provider: Any = None

    def initProcessing(self) -> None:
        """Register the Processing provider (QGIS calls this before initGui when hasProcessingProvider=yes)."""
        if self.provider is not None:
            return
        try:
            from qgis.core import QgsApplication

            from .processing_provider import RspProcessingProvider
        except ImportError:  # Processing not available in this QGIS build
            return
        self.provider = RspProcessingProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Add the toolbar, the Raster-menu entries and the Processing provider."""
        icon = QIcon(icon_path())
        main_window = self.iface.mainWindow()
        self.segment_action = QAction(icon, SEGMENT_ACTION_TEXT, main_window)
        self.segment_action.setObjectName(SEGMENT_ACTION_OBJECT_NAME)
        self.segment_action.setToolTip("Segment a raster layer with an RSP model (UperNet)")
        self.segment_action.triggered.connect(lambda: self.show_segment_dialog())
        self.train_action = QAction(icon, TRAIN_ACTION_TEXT, main_window)
        self.train_action.setObjectName(TRAIN_ACTION_OBJECT_NAME)
        self.train_action.setToolTip("Fine-tune a model on your own labels (polygons) and measure its accuracy")
        self.train_action.triggered.connect(self.show_train_dialog)
        batch_action = QAction(icon, "Segment several rasters…", main_window)
        batch_action.setObjectName(BATCH_ACTION_OBJECT_NAME)
        batch_action.triggered.connect(self.show_batch_dialog)
        manager_action = QAction(icon, "Model manager…", main_window)
        manager_action.setObjectName("rspModelManagerAction")
        manager_action.triggered.connect(self.show_model_manager)
        settings_action = QAction("Settings / Check environment…", main_window)
        settings_action.setObjectName("rspSettingsAction")
        settings_action.triggered.connect(self.show_settings)
        self.toolbar = self.iface.addToolBar("RSP Segmentation")
        self.toolbar.setObjectName(TOOLBAR_OBJECT_NAME)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)  # same icon: show their names
        self.toolbar.addAction(self.segment_action)
        self.toolbar.addAction(self.train_action)
        for action in (self.segment_action, batch_action, self.train_action, manager_action, settings_action):
            self.iface.addPluginToRasterMenu(MENU_NAME, action)
            self.actions.append(action)
        self.initProcessing()

    def unload(self) -> None:
        """Remove what initGui added; running engines are cancelled first."""
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU_NAME, action)
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        for dialog in (self.dialog, self.batch_dialog, self.train_dialog):
            if dialog is not None:
                dialog.shutdown()
                dialog.deleteLater()
        self.dialog = None
        self.batch_dialog = None
        self.train_dialog = None
        if self.provider is not None:
            from qgis.core import QgsApplication

            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        self.actions = []
        self.segment_action = None
        self.train_action = None

    def show_segment_dialog(self, layer: Any = None, model_path: str | None = None) -> None:
        """Open (or raise) the non-modal Segment layer dialog, optionally with a raster layer and a model chosen."""
        from .segment_dialog import SegmentDialog

        if self.dialog is None:
            self.dialog = SegmentDialog(self.iface, parent=self.iface.mainWindow())
        self.dialog.refresh()
        if model_path:
            index = self.dialog.model_combo.findData(model_path)
            if index >= 0:
                self.dialog.model_combo.setCurrentIndex(index)
        if layer is not None:
            self.dialog.layer_combo.setLayer(layer)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

    def show_batch_dialog(self) -> None:
        """Open (or raise) the non-modal Segment several rasters dialog."""
        from .batch_dialog import BatchDialog

        if self.batch_dialog is None:
            self.batch_dialog = BatchDialog(self.iface, parent=self.iface.mainWindow())
        self.batch_dialog.refresh()
        self.batch_dialog.show()
        self.batch_dialog.raise_()
        self.batch_dialog.activateWindow()

    def show_train_dialog(self) -> None:
        """Open (or raise) the non-modal Train model dialog."""
        from .train_dialog import TrainDialog

        if self.train_dialog is None:
            self.train_dialog = TrainDialog(self.iface, parent=self.iface.mainWindow())
            self.train_dialog.model_trained.connect(self._on_model_trained)
            self.train_dialog.segment_requested.connect(self.show_segment_dialog)
        else:
            self.train_dialog.refresh()
        self.train_dialog.show()
        self.train_dialog.raise_()
        self.train_dialog.activateWindow()

    def _on_model_trained(self, _path: str) -> None:
        """A new model is in the models folder: the Segment dialog lists it."""
        if self.dialog is not None:
            self.dialog.refresh()

    def show_model_manager(self) -> None:
        """Open the model manager (modal), then refresh the open dialog's model list."""
        from .model_manager_dialog import ModelManagerDialog

        ModelManagerDialog(parent=self.iface.mainWindow()).exec_()
        for dialog in (self.dialog, self.train_dialog):
            if dialog is not None:
                dialog.refresh()

    def show_settings(self) -> None:
        """Open the settings (engine interpreter, Check environment)."""
        from .settings_dialog import SettingsDialog

        SettingsDialog(parent=self.iface.mainWindow()).exec_()
