"""The "Segment layer" dialog: gathers a :class:`SegmentParameters`, runs the engine subprocess, loads the results.

The dialog only gathers parameters (:meth:`SegmentDialog.gather_parameters`); validation and the command line are
in :mod:`.parameters`, layers → files and extents in :mod:`.layer_inputs`, the run's lifecycle (progress, Cancel,
errors) in :mod:`.run_dialog`, the subprocess in :mod:`.engine_runner`, styling in :mod:`.layer_styling`.
Choices are remembered in QgsSettings (output paths are not: they default next to each input raster).

When the engine left an unfinished run for the chosen class raster (QGIS closed mid-run, a crash, a failure:
:func:`engine.journal.unfinished_run`), a **Resume** button next to Run continues it (``--resume``); Run starts
again from the beginning (the engine then removes the unfinished run's files).

After a run, **Where to label next** (:mod:`.label_next`) suggests squares of the segmented raster where labels would
help the model most, as a numbered layer next to the run's outputs (``<input>_<model>_suggestions[_N].gpkg``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QTemporaryDir
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from . import plugin_settings
from .dialog_widgets import (
    FittedLabel,
    ModelCombo,
    apply_cuda_availability,
    device_combo,
    output_file_widget,
    save_device,
    show_environment_report,
)
from .engine_locator import ensure_engine_importable
from .engine_runner import EngineRunner
from .label_next import LabelNextRow, suggest_run
from .layer_inputs import (
    MASK_FILE_NAME,
    LayerExportError,
    canvas_bbox,
    export_features,
    layer_file_path,
    layer_gdal_name,
    layer_pixel_size_m,
)
from .layer_styling import add_results_to_project
from .model_catalog import ModelEntry, format_info_html, list_models
from .parameters import (
    DEFAULT_BATCH_SIZE,
    GSD_MODEL,
    GSD_NATIVE,
    MAX_BATCH_SIZE,
    PRECISIONS,
    ExtentMode,
    InvalidParametersError,
    SegmentParameters,
    default_band_mapping,
    default_output_paths,
    gsd_summary,
    parse_band_list,
)
from .progress_stream import DoneEvent, ProgressEvent
from .run_dialog import MESSAGE_TITLE, RunDialog
from .suggest_parameters import free_suggestions_path, suggestions_stem
from .web_layers import (
    WebLayerProblem,
    checked_web_request,
    default_web_outputs,
    is_web_layer,
    max_web_pixels,
    web_request,
    write_description,
)

GSD_LABELS = {GSD_MODEL: "The model's GSD", GSD_NATIVE: "The layer's own resolution", "metres": "Custom (metres)"}

PRECISION_LABELS = ("Automatic (bf16 where it is fast and accurate)", "fp32 (reference numbers)", "bf16")
EXTENT_LABELS = {
    ExtentMode.WHOLE_LAYER: "Whole layer",
    ExtentMode.CANVAS: "Current map canvas view",
    ExtentMode.POLYGON_LAYER: "Features of a polygon layer",
    ExtentMode.SELECTED_FEATURES: "Selected features of a polygon layer",
}


def layer_band_names(layer: QgsRasterLayer) -> list[str]:
    """Colour interpretation name of each band (``"Red"``, ``"Green"``, ``"Gray"``, ...)."""
    provider = layer.dataProvider()
    return [provider.colorInterpretationName(i) for i in range(1, layer.bandCount() + 1)]


class SegmentDialog(RunDialog):
    """Non-modal dialog; one run at a time."""

    FAILED_TITLE = "Segmentation failed"
    STARTING_TEXT = "Starting the engine…"
    CANCELLED_TEXT = "Cancelled; no output was kept."
    CANCELLED_MESSAGE = "Segmentation cancelled; no output was kept."

    def __init__(self, iface: Any, parent: Any = None) -> None:
        super().__init__(iface, parent)
        self.setWindowTitle("Segment layer – RSP Segmentation")
        self.setMinimumWidth(560)
        self.setObjectName("rspSegmentDialog")
        self._run_entry: ModelEntry | None = None
        self._tmp: QTemporaryDir | None = None
        self._web_tmp: QTemporaryDir | None = None  # the web layer's service description, kept for the run
        self._auto_outputs: dict[str, str] = {}
        self._default_bands: tuple[int, ...] | None = None  # the mapping the engine chooses by itself
        self._resume_next = False  # the run being started continues an unfinished one
        self._last_run: tuple[SegmentParameters, ModelEntry, str] | None = None  # params, model, input name
        self._build()
        self._restore_settings()
        self.refresh()

    # -- widgets ---------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = self._dialog_layout()
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox(self)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setObjectName("layerCombo")
        form.addRow("Raster layer", self.layer_combo)
        model_row = QHBoxLayout()
        self.model_combo = ModelCombo(self)
        self.model_combo.setObjectName("modelCombo")
        self.manager_button = QPushButton("Models…", self)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.manager_button)
        self.several_button = QPushButton("Several rasters…", self)
        self.several_button.setToolTip("Segment several layers or a folder of rasters with one model load")
        self.several_button.clicked.connect(self._open_several)
        form.addRow("Model", model_row)
        self.model_info = FittedLabel(self)  # its height follows its text: a long description is never clipped
        self.model_info.setObjectName("modelInfo")
        form.addRow("", self.model_info)
        self.extent_combo = QComboBox(self)
        for mode, label in EXTENT_LABELS.items():
            self.extent_combo.addItem(label, mode.value)
        form.addRow("Extent", self.extent_combo)
        self.mask_combo = QgsMapLayerComboBox(self)
        self.mask_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        form.addRow("Polygon layer", self.mask_combo)
        self.bands_edit = QLineEdit(self)
        self.bands_edit.setObjectName("bandsEdit")
        self.bands_edit.setToolTip("Raster band number for each model input band, in the model's order")
        form.addRow("Bands", self.bands_edit)
        gsd_row = QHBoxLayout()
        self.gsd_combo = QComboBox(self)
        self.gsd_combo.setObjectName("gsdCombo")
        for key, label in GSD_LABELS.items():
            self.gsd_combo.addItem(label, key)
        self.gsd_spin = QDoubleSpinBox(self)
        self.gsd_spin.setObjectName("gsdSpin")
        self.gsd_spin.setRange(0.01, 1000.0)
        self.gsd_spin.setDecimals(3)
        self.gsd_spin.setValue(0.5)
        self.gsd_spin.setSuffix(" m/px")
        gsd_row.addWidget(self.gsd_combo, 1)
        gsd_row.addWidget(self.gsd_spin)
        form.addRow("Resolution (GSD)", gsd_row)
        self.gsd_info = FittedLabel(self)
        self.gsd_info.setObjectName("gsdInfo")
        form.addRow("", self.gsd_info)
        self.device_combo = device_combo(self)
        form.addRow("Device", self.device_combo)
        self.batch_spin = QSpinBox(self)
        self.batch_spin.setRange(1, MAX_BATCH_SIZE)
        self.batch_spin.setValue(DEFAULT_BATCH_SIZE)
        form.addRow("Batch size", self.batch_spin)
        layout.addLayout(form)

        outputs = QGroupBox("Outputs", self)
        out_form = QFormLayout(outputs)
        self.raster_out = output_file_widget(self, "GeoTIFF (*.tif *.tiff)")
        out_form.addRow("Classified raster", self.raster_out)
        self.vector_check = QCheckBox("Polygons (GeoPackage)", self)
        self.vector_out = output_file_widget(self, "GeoPackage (*.gpkg)")
        out_form.addRow(self.vector_check, self.vector_out)
        self.confidence_check = QCheckBox("Confidence raster", self)
        self.confidence_out = output_file_widget(self, "GeoTIFF (*.tif *.tiff)")
        out_form.addRow(self.confidence_check, self.confidence_out)
        self.min_area_spin = QDoubleSpinBox(self)
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setSuffix(" m²")
        out_form.addRow("Minimum polygon area", self.min_area_spin)
        self.simplify_spin = QDoubleSpinBox(self)
        self.simplify_spin.setRange(0.0, 1e5)
        self.simplify_spin.setDecimals(2)
        self.simplify_spin.setSuffix(" m")
        out_form.addRow("Simplify tolerance", self.simplify_spin)
        self.overwrite_check = QCheckBox("Overwrite existing outputs", self)
        out_form.addRow("", self.overwrite_check)
        layout.addWidget(outputs)

        advanced = QgsCollapsibleGroupBox("Advanced", self)
        advanced.setObjectName("advancedGroup")
        adv_form = QFormLayout(advanced)
        self.precision_combo = QComboBox(self)
        self.precision_combo.setObjectName("precisionCombo")
        for value, label in zip(PRECISIONS, PRECISION_LABELS, strict=True):
            self.precision_combo.addItem(label, value)
        self.precision_combo.setToolTip(
            "Automatic runs bfloat16 on CPUs with AVX512-BF16 or AMX (and GPUs with bf16) for networks whose bf16 "
            "labels were measured equal to fp32's on at least 99.5 % of pixels; fp32 gives the reference numbers."
        )
        adv_form.addRow("Precision", self.precision_combo)
        advanced.setCollapsed(True)
        layout.addWidget(advanced)

        self.check_button = QPushButton("Check environment", self)
        self.label_next = LabelNextRow(self)
        self.label_next.suggest_button.clicked.connect(self.where_to_label_next)
        self._add_run_controls(layout, self.check_button, below_status=self.label_next)
        layout.itemAt(layout.count() - 1).layout().insertWidget(1, self.several_button)
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setObjectName("resumeButton")
        self.resume_button.setVisible(False)
        self.resume_button.clicked.connect(self.resume)
        row = self._button_row()
        row.insertWidget(row.indexOf(self.run_button), self.resume_button)
        self.raster_out.fileChanged.connect(self._update_enabled)

        self.layer_combo.layerChanged.connect(self._on_inputs_changed)
        self.model_combo.currentIndexChanged.connect(self._on_inputs_changed)
        self.extent_combo.currentIndexChanged.connect(self._update_enabled)
        self.gsd_combo.currentIndexChanged.connect(self._update_enabled)
        self.gsd_spin.valueChanged.connect(self._update_enabled)
        self.vector_check.toggled.connect(self._update_enabled)
        self.confidence_check.toggled.connect(self._update_enabled)
        self.check_button.clicked.connect(self.show_environment_check)
        self.manager_button.clicked.connect(self._open_manager)

    # -- state -----------------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the model list (after the model manager changed it), keeping the current choice."""
        current = self.model_combo.currentData() or plugin_settings.get_value("model", "")
        self.model_combo.set_models(list_models(), current)
        self._on_inputs_changed()

    def _on_inputs_changed(self, *_args: Any) -> None:
        entry = self.model_combo.current_model()
        self.model_info.setText(
            format_info_html(entry, brief=True) if entry else "No model installed: open <b>Models…</b> to import one."
        )
        self.model_info.setToolTip(format_info_html(entry) if entry else "")
        layer = self.layer_combo.currentLayer()
        if entry is not None and entry.info is not None and isinstance(layer, QgsRasterLayer):
            # The engine's rule; sent as --bands only when the analyst changes it (see gather_parameters).
            # A web layer is read through its GDAL description: red, green, blue and alpha (engine.web_tiles).
            names = ["Red", "Green", "Blue", "Alpha"] if is_web_layer(layer) else layer_band_names(layer)
            self._default_bands = default_band_mapping(entry.info.bands, names)
            self.bands_edit.setText(",".join(str(b) for b in self._default_bands or ()))
            self.bands_edit.setPlaceholderText(
                f"{len(entry.info.bands)} band numbers for {', '.join(entry.info.bands)}"
            )
        self._set_default_outputs()
        self._update_enabled()

    def _set_default_outputs(self) -> None:
        """Outputs follow the input and model until the user types their own paths."""
        entry = self.model_combo.current_model()
        layer = self.layer_combo.currentLayer()
        input_path = layer_file_path(layer)
        defaults = default_output_paths(input_path, entry.path) if input_path and entry else {}
        if entry and (is_web_layer(layer) or layer_gdal_name(layer)):  # remote: the project's folder
            defaults = default_web_outputs(layer, entry.path)
        for key, widget in (
            ("raster", self.raster_out),
            ("vector", self.vector_out),
            ("confidence", self.confidence_out),
        ):
            if not widget.filePath() or widget.filePath() == self._auto_outputs.get(key):
                widget.setFilePath(defaults.get(key, ""))
        self._auto_outputs = defaults

    def _update_enabled(self, *_args: Any) -> None:
        mode = ExtentMode(self.extent_combo.currentData())
        self.mask_combo.setEnabled(mode in (ExtentMode.POLYGON_LAYER, ExtentMode.SELECTED_FEATURES))
        self.vector_out.setEnabled(self.vector_check.isChecked())
        self.min_area_spin.setEnabled(self.vector_check.isChecked())
        self.simplify_spin.setEnabled(self.vector_check.isChecked())
        self.confidence_out.setEnabled(self.confidence_check.isChecked())
        self.gsd_spin.setEnabled(self.gsd_combo.currentData() == "metres")
        entry = self.model_combo.current_model()
        model_gsd = entry.info.gsd_m if entry is not None and entry.info is not None else None
        self.gsd_info.setText(self._resolution_text(model_gsd))
        super()._update_enabled()
        self.label_next.setEnabled(self.runner is None)
        if hasattr(self, "resume_button"):
            self._offer_resume()

    def _button_row(self) -> QHBoxLayout:
        """The layout holding Run, Cancel and Close."""
        layout = self.layout()
        for i in range(layout.count()):
            item = layout.itemAt(i).layout()
            if isinstance(item, QHBoxLayout) and item.indexOf(self.run_button) >= 0:
                return item
        raise RuntimeError("the dialog has no Run button row")

    def unfinished_run(self) -> dict[str, Any] | None:
        """The engine's unfinished run for the chosen class raster (:func:`engine.journal.unfinished_run`), or None."""
        path = self.raster_out.filePath().strip()
        if not path:
            return None
        ensure_engine_importable()
        from engine.journal import unfinished_run

        return unfinished_run(path)

    def _offer_resume(self) -> None:
        """Show Resume, with how much is done, while idle and an unfinished run exists for the chosen output."""
        unfinished = self.unfinished_run() if self.runner is None else None
        self.resume_button.setVisible(unfinished is not None)
        self.resume_button.setEnabled(unfinished is not None)
        if unfinished is not None:
            percent = round(100 * unfinished["fraction"])
            self.resume_button.setText(f"Resume ({percent} % done)")
            self.resume_button.setToolTip(
                "An unfinished run for this output exists: Resume continues it with the same options. "
                "Run starts again from the beginning."
            )

    def resume(self) -> bool:
        """Continue the unfinished run for the chosen output (``--resume``); False when it cannot start."""
        self._resume_next = True
        try:
            return self.run()
        finally:
            self._resume_next = False

    def _resolution_text(self, model_gsd: float | None) -> str:
        """The GSD line; for a web layer also the download (pixel size, raster size) and why it is refused."""
        layer = self.layer_combo.currentLayer()
        if not is_web_layer(layer):
            return gsd_summary(self._gsd_choice(), model_gsd, layer_pixel_size_m(layer))
        try:
            request = web_request(layer, self._web_extent(layer, ExtentMode(self.extent_combo.currentData())),
                                  self._gsd_metres())  # fmt: skip
        except WebLayerProblem as exc:
            return str(exc)
        lines = [request.summary(), gsd_summary(self._gsd_choice(), model_gsd, request.pixel_m)]
        too_large = request.size_problem(max_web_pixels())
        return "<br>".join(lines + ([f"<b>{too_large}</b>"] if too_large else []))

    def _gsd_choice(self) -> str:
        """``--gsd`` of the widgets: ``model``, ``native`` or the custom metres as text."""
        choice = str(self.gsd_combo.currentData())
        return f"{self.gsd_spin.value():g}" if choice == "metres" else choice

    def _restore_settings(self) -> None:
        get = plugin_settings.get_value
        mode_index = self.extent_combo.findData(get("extent", ExtentMode.WHOLE_LAYER.value))
        self.extent_combo.setCurrentIndex(max(mode_index, 0))
        self.batch_spin.setValue(int(get("batch_size", DEFAULT_BATCH_SIZE, int)))
        self.precision_combo.setCurrentIndex(max(self.precision_combo.findData(get("precision", "auto")), 0))
        self.gsd_combo.setCurrentIndex(max(self.gsd_combo.findData(get("gsd", GSD_MODEL)), 0))
        self.gsd_spin.setValue(float(get("gsd_m", 0.5, float)))
        self.vector_check.setChecked(bool(get("vector", True, bool)))
        self.confidence_check.setChecked(bool(get("confidence", False, bool)))
        self.min_area_spin.setValue(float(get("min_area_m2", 0.0, float)))
        self.simplify_spin.setValue(float(get("simplify_m", 0.0, float)))
        self.overwrite_check.setChecked(bool(get("overwrite", False, bool)))

    def _save_settings(self) -> None:
        entry = self.model_combo.current_model()
        values = {
            "model": entry.path if entry else "",
            "extent": self.extent_combo.currentData(),
            "batch_size": self.batch_spin.value(),
            "precision": self.precision_combo.currentData(),
            "gsd": self.gsd_combo.currentData(),
            "gsd_m": self.gsd_spin.value(),
            "vector": self.vector_check.isChecked(),
            "confidence": self.confidence_check.isChecked(),
            "min_area_m2": self.min_area_spin.value(),
            "simplify_m": self.simplify_spin.value(),
            "overwrite": self.overwrite_check.isChecked(),
        }
        for key, value in values.items():
            plugin_settings.set_value(key, value)
        save_device(self.device_combo)

    # -- parameters ------------------------------------------------------------------------------------------------

    def _export_mask(self, polygons: QgsVectorLayer, raster: QgsRasterLayer, selected_only: bool) -> str | None:
        """The polygon layer's (selected) features, in the raster's CRS, in a GeoPackage kept until the run ends.

        None when nothing is selected or the export failed (validation then asks for polygons).
        """
        if selected_only and polygons.selectedFeatureCount() == 0:
            return None
        self._tmp = QTemporaryDir()
        try:
            return export_features(
                polygons, selected_only=selected_only, crs=raster.crs(), folder=self._tmp.path(), name=MASK_FILE_NAME
            )
        except LayerExportError:
            return None

    def _gsd_metres(self) -> float | None:
        """The GSD in metres the run reads at (None: the layer's own)."""
        choice = self._gsd_choice()
        if choice == GSD_NATIVE:
            return None
        if choice == GSD_MODEL:
            entry = self.model_combo.current_model()
            return entry.info.gsd_m if entry is not None and entry.info is not None else None
        return float(choice)

    def _web_extent(self, layer: QgsRasterLayer, mode: ExtentMode) -> tuple[float, float, float, float]:
        """The run's extent in the web layer's CRS (a web layer covers the world: the whole layer is refused)."""
        if mode is ExtentMode.CANVAS:
            bbox = canvas_bbox(self.iface.mapCanvas(), layer)
        elif mode is ExtentMode.WHOLE_LAYER:
            raise WebLayerProblem(
                f"Layer '{layer.name()}' is a web layer, which covers the whole world: choose 'Current map canvas "
                "view' or polygons as the extent."
            )
        else:
            polygons = self.mask_combo.currentLayer()
            if not isinstance(polygons, QgsVectorLayer):
                raise WebLayerProblem("Choose a polygon layer (with selected features for 'Selected features').")
            rect = polygons.boundingBoxOfSelected() if mode is ExtentMode.SELECTED_FEATURES else polygons.extent()
            transform = QgsCoordinateTransform(polygons.crs(), layer.crs(), QgsProject.instance())
            rect = transform.transformBoundingBox(QgsRectangle(rect)).intersect(layer.extent())
            bbox = None if rect.isEmpty() else (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        if bbox is None:
            raise WebLayerProblem("The extent does not overlap the layer: pan to it or choose another extent.")
        return bbox

    def _web_input(self, layer: QgsRasterLayer, mode: ExtentMode) -> tuple[str, Any, tuple[str, ...]]:
        """``(description path, --bbox, problems)`` of a web layer for this run (nothing written when refused)."""
        try:
            request = checked_web_request(layer, self._web_extent(layer, mode), self._gsd_metres())
        except WebLayerProblem as exc:
            return "", None, (str(exc),)
        self._web_tmp = QTemporaryDir()
        return write_description(request, self._web_tmp.path()), request.bbox, ()

    def gather_parameters(self) -> SegmentParameters:
        """Read the widgets into a :class:`SegmentParameters` (not validated: call ``problems()``).

        Raises:
            InvalidParametersError: the band list is not a list of numbers.
        """
        layer = self.layer_combo.currentLayer()
        entry = self.model_combo.current_model()
        mode = ExtentMode(self.extent_combo.currentData())
        bands = parse_band_list(self.bands_edit.text())
        bbox = None
        mask = None
        input_path, input_bbox, input_problems = layer_file_path(layer) or layer_gdal_name(layer), None, ()
        if is_web_layer(layer):
            input_path, input_bbox, input_problems = self._web_input(layer, mode)
            if not self.raster_out.filePath().strip():
                input_problems += ("Save the project first (outputs of a web layer go to its folder) or choose the "
                                   "output paths.",)  # fmt: skip
        if isinstance(layer, QgsRasterLayer):
            if mode is ExtentMode.CANVAS:
                bbox = canvas_bbox(self.iface.mapCanvas(), layer)
            elif mode in (ExtentMode.POLYGON_LAYER, ExtentMode.SELECTED_FEATURES):
                polygons = self.mask_combo.currentLayer()
                if isinstance(polygons, QgsVectorLayer):
                    mask = self._export_mask(polygons, layer, mode is ExtentMode.SELECTED_FEATURES)
        return SegmentParameters(
            input_path=input_path,
            model_path=entry.path if entry and entry.info is not None else "",
            output_raster=self.raster_out.filePath().strip(),
            output_vector=self.vector_out.filePath().strip() if self.vector_check.isChecked() else None,
            output_confidence=self.confidence_out.filePath().strip() if self.confidence_check.isChecked() else None,
            extent_mode=mode,
            bbox=bbox,
            mask_path=mask,
            bands=None if bands == self._default_bands else bands,
            gsd=self._gsd_choice(),
            device=self.device_combo.currentText(),
            batch_size=self.batch_spin.value(),
            precision=str(self.precision_combo.currentData()),
            min_area_m2=self.min_area_spin.value(),
            simplify_m=self.simplify_spin.value(),
            overwrite=self.overwrite_check.isChecked(),
            input_bbox=input_bbox,
            input_problems=input_problems,
        )

    # -- running ---------------------------------------------------------------------------------------------------

    def _checked_parameters(self) -> SegmentParameters:
        params = self.gather_parameters()
        if self._resume_next:
            params = dataclasses.replace(params, resume=True)
        params.validate()
        return params

    def _new_runner(self, params: SegmentParameters) -> EngineRunner:
        self._run_entry = self.model_combo.current_model()
        return EngineRunner(plugin_settings.interpreter(), params.engine_args(), params.output_paths(), self)

    def _task_title(self, params: SegmentParameters) -> str:
        layer = self.layer_combo.currentLayer()
        web = params.input_bbox is not None or layer_gdal_name(layer) or is_web_layer(layer)
        return f"Segmenting {layer.name() if web and layer is not None else Path(params.input_path).name}"

    def _progress_text(self, event: ProgressEvent) -> str:
        eta = f", about {event.eta_s:.0f} s left" if event.eta_s is not None else ""
        return f"{event.done} of {event.total} windows{eta}"

    def _on_failed(self, message: str, hint: str) -> None:
        ensure_engine_importable()
        from engine.journal import RESUME_ADVICE

        super()._on_failed(message, hint.replace(RESUME_ADVICE, "click Resume to continue, or Run to start afresh"))

    def _finish(self, ok: bool) -> None:
        super()._finish(ok)
        self._tmp = None  # the exported mask polygons
        self._web_tmp = None  # the web layer's description

    def _on_done(self, event: DoneEvent) -> None:
        params, entry = self._run_params, self._run_entry
        self._finish(True)
        self.progress.setValue(100)
        assert params is not None and entry is not None and entry.info is not None
        outputs = {
            "raster": event.labels or params.output_raster,
            "vector": event.vector or "",
            "confidence": event.confidence or "",
        }
        layer = self.layer_combo.currentLayer()
        input_name = layer.name() if layer is not None else Path(params.input_path).stem
        add_results_to_project(outputs, entry.info.class_names, entry.info.colors, input_name, entry.name)
        self.status_label.setText(f"Done: {outputs['raster']}")
        self.iface.messageBar().pushSuccess(MESSAGE_TITLE, f"Segmented {input_name} with {entry.name}")
        self._auto_outputs = {}
        self._set_default_outputs()
        self._last_run = (params, entry, input_name)
        rereadable = params.input_bbox is None and not is_web_layer(layer)  # a web layer's download is not kept
        self.label_next.suggest_button.setEnabled(rereadable)
        self.label_next.suggest_button.setToolTip(
            self.label_next.suggest_button.toolTip()
            if rereadable
            else "Needs a raster file: save the web layer's area as a GeoTIFF (Export → Save As) and segment that"
        )
        self.label_next.show()

    def where_to_label_next(self) -> bool:
        """Suggest squares to label on the last run's raster, with its model, as a numbered layer (a side run).

        Returns:
            False (with the reason shown) when it cannot start.
        """
        if self._last_run is None or self.runner is not None:
            return False
        params, entry, input_name = self._last_run
        folder = os.path.dirname(os.path.abspath(params.output_raster))
        output = free_suggestions_path(folder, suggestions_stem(params.input_path, entry.path))
        try:
            side = suggest_run(
                self.iface, entry.path, params.input_path, f"Where to label next – {input_name}", output,
                self.label_next, device=params.device,
            )  # fmt: skip
        except InvalidParametersError as exc:
            self.message_bar.pushWarning("Cannot run", str(exc).replace("\n", " "))
            self.status_label.setText(str(exc))
            return False
        return self.start_side_run(side)

    # -- helpers ---------------------------------------------------------------------------------------------------

    def show_environment_check(self) -> None:
        """Run Check environment, show its report, and offer CUDA only when the engine interpreter has a GPU."""
        show_environment_report(self, self.device_combo)

    def _apply_cuda_availability(self, available: Any) -> None:
        """Disable the CUDA choice once Check environment has found no GPU (unknown before the first check)."""
        apply_cuda_availability(self.device_combo, available)

    def _open_several(self) -> None:
        """The plugin's "Segment several rasters…" action (:mod:`.batch_dialog`)."""
        from qgis.PyQt.QtWidgets import QAction

        action = self.iface.mainWindow().findChild(QAction, "rspSegmentSeveralAction")
        if action is not None:
            action.trigger()

    def _open_manager(self) -> None:
        from .model_manager_dialog import ModelManagerDialog

        ModelManagerDialog(parent=self).exec_()
        self.refresh()
