"""What one segmentation run needs, gathered from the dialog or the Processing algorithm into a dataclass.

The UI only fills :class:`SegmentParameters`; validation and the engine command line live here (pure Python, no
Qt), so the dialog, Processing and tests share them.

Decision (outputs): default output paths are *next to the input raster*, named
``<input stem>_<model stem>_classes.tif`` / ``_polygons.gpkg`` / ``_confidence.tif``; when that folder is not writable
the user must choose a folder (validation says so): results are never written to a temporary folder silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .engine_locator import ensure_engine_importable

ensure_engine_importable()
from engine import options as engine_options  # noqa: E402  (standard library only: the engine's option values)

DEVICES = ("cpu", "cuda")
PRECISIONS = engine_options.PRECISIONS  # python -m engine predict --precision
DEFAULT_BATCH_SIZE = engine_options.BATCH_SIZE
MAX_BATCH_SIZE = 256
DEFAULT_MIN_AREA_M2 = 0.0
DEFAULT_SIMPLIFY_M = 0.0
GSD_MODEL, GSD_NATIVE = engine_options.GSD_MODEL, engine_options.GSD_NATIVE  # the engine's named --gsd choices
GSD_TOLERANCE = 0.05  # engine.georef.GSD_TOLERANCE: a GSD this close to the layer's is read without resampling


def parse_gsd_text(text: str) -> str | None:
    """A ``--gsd`` value as the engine takes it: ``"model"``, ``"native"`` or metres as text; None when invalid."""
    value = text.strip().lower()
    if value in (GSD_MODEL, GSD_NATIVE):
        return value
    try:
        metres = float(value)
    except ValueError:
        return None
    return _num(metres) if 0 < metres < float("inf") else None


def gsd_summary(choice: str, model_gsd: float | None, layer_gsd: float | None) -> str:
    """One line for the dialog: the GSD the network reads the layer at, and the resampling factor.

    Args:
        choice: ``"model"``, ``"native"`` or metres as text (:func:`parse_gsd_text`).
        model_gsd: the model file's GSD in metres (None: the model has none).
        layer_gsd: the layer's pixel size in metres (None: unknown, e.g. no CRS).

    Returns:
        e.g. ``"Reads at 0.5 m/px (the model's GSD); layer pixels 0.25 m: resampling factor 2"``.
    """
    if choice == GSD_NATIVE or (choice == GSD_MODEL and not model_gsd):
        why = "the layer's own resolution" if choice == GSD_NATIVE else "the model has no GSD"
        size = f"{layer_gsd:.3g} m/px" if layer_gsd else "its own resolution"
        return f"Reads at {size} ({why}); resampling factor 1"
    used = float(model_gsd if choice == GSD_MODEL else choice)  # type: ignore[arg-type]
    why = "the model's GSD" if choice == GSD_MODEL else "chosen"
    if not layer_gsd:
        return f"Reads at {used:.3g} m/px ({why}); the layer's pixel size is unknown"
    factor = used / layer_gsd
    if abs(factor - 1) <= GSD_TOLERANCE:
        return f"Reads at {layer_gsd:.3g} m/px (within 5 % of {why}, {used:.3g} m): resampling factor 1"
    return f"Reads at {used:.3g} m/px ({why}); layer pixels {layer_gsd:.3g} m: resampling factor {factor:.3g}"


class ExtentMode(StrEnum):
    """Which part of the raster to segment."""

    WHOLE_LAYER = "whole"
    CANVAS = "canvas"
    POLYGON_LAYER = "polygons"
    SELECTED_FEATURES = "selected"


class InvalidParametersError(Exception):
    """The run's parameters, as entered in the dialog or Processing, are incomplete or inconsistent; the message
    lists what to fix there. Not the engine's ``ParameterError``: that one reaches the plugin only as an ``error``
    event of the engine's stream, never as an exception."""


class CheckedParameters:
    """What the run parameters (:class:`SegmentParameters`, ``TrainParameters``) share: :meth:`problems` lists what to
    fix, :meth:`validate` raises it."""

    def problems(self) -> list[str]:
        """Every reason this run cannot start, in words an analyst can act on (empty when valid)."""
        raise NotImplementedError

    def validate(self) -> None:
        """Raise :class:`InvalidParametersError` listing every problem, if any."""
        problems = self.problems()
        if problems:
            raise InvalidParametersError("\n".join(problems))


@dataclass(frozen=True)
class SegmentParameters(CheckedParameters):
    """One run of ``python -m engine predict``.

    Attributes:
        input_path: GDAL-readable raster file of the input layer.
        model_path: ``*.rspmodel`` file.
        output_raster: classified GeoTIFF to write (uint8 class ids).
        output_vector: optional GeoPackage of polygons (``class_id``, ``class_name``, ``area_m2``).
        output_confidence: optional float32 confidence GeoTIFF.
        extent_mode: whole layer, a bounding box, or polygons.
        bbox: ``(xmin, ymin, xmax, ymax)`` in the input raster's CRS units, for ``ExtentMode.CANVAS``.
        mask_path: polygon file (any OGR format) limiting the run, for the polygon extent modes.
        bands: 1-based raster band per model input band, or None for the engine's default mapping.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: windows per forward pass.
        min_area_m2: polygons smaller than this (square metres) are dropped; 0 keeps all.
        simplify_m: polygon simplification tolerance in metres; 0 disables it.
        overwrite: replace existing outputs.
        threads: torch CPU threads, None for the engine's default.
        precision: ``"auto"`` (bfloat16 where the CPU/GPU computes it natively and the network's bf16 labels were
            measured equal to fp32's on ≥ 99.5 % of pixels), ``"fp32"`` or ``"bf16"`` (``--precision``).
        gsd: ``--gsd``: ``"model"`` (default), ``"native"`` or metres as text.
        input_bbox: ``--bbox`` the input itself needs (a web tile layer: the extent in its CRS), sent in every extent
            mode (with ``--mask`` for polygons).
        input_problems: why the input layer cannot be read for this run (e.g. a web download too large).
        resume: continue the unfinished run for ``output_raster`` (``--resume``).
    """

    input_path: str
    model_path: str
    output_raster: str
    output_vector: str | None = None
    output_confidence: str | None = None
    extent_mode: ExtentMode = ExtentMode.WHOLE_LAYER
    bbox: tuple[float, float, float, float] | None = None
    mask_path: str | None = None
    bands: tuple[int, ...] | None = None
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE
    min_area_m2: float = DEFAULT_MIN_AREA_M2
    simplify_m: float = DEFAULT_SIMPLIFY_M
    overwrite: bool = False
    threads: int | None = None
    precision: str = "auto"
    gsd: str = GSD_MODEL
    input_bbox: tuple[float, float, float, float] | None = None
    input_problems: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    resume: bool = False

    def problems(self) -> list[str]:
        """Every reason this run cannot start, in words an analyst can act on (empty when valid)."""
        out: list[str] = list(self.input_problems)
        local = bool(self.input_path) and os.path.isfile(self.input_path)
        if not self.input_problems and not local and not self.input_path.startswith("/vsi"):
            out.append("Choose a raster layer: a file (GeoTIFF or any GDAL format) or a web layer (XYZ, WMS).")
        if not self.model_path or not os.path.isfile(self.model_path):
            out.append("Choose a model (install one in the Model manager).")
        outputs = [p for p in (self.output_raster, self.output_vector, self.output_confidence) if p]
        if not self.output_raster:
            out.append("Set the classified raster output path.")
        elif not self.output_raster.lower().endswith((".tif", ".tiff")):
            out.append("The classified raster output must be a GeoTIFF (.tif).")
        if self.output_vector and not self.output_vector.lower().endswith(".gpkg"):
            out.append("The polygon output must be a GeoPackage (.gpkg).")
        if self.output_confidence and not self.output_confidence.lower().endswith((".tif", ".tiff")):
            out.append("The confidence output must be a GeoTIFF (.tif).")
        if len({os.path.abspath(p) for p in outputs}) != len(outputs):
            out.append("The output paths must differ from each other.")
        if self.input_path and any(os.path.abspath(p) == os.path.abspath(self.input_path) for p in outputs):
            out.append("An output path equals the input raster: choose another name.")
        for path in outputs:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                out.append(f"The output folder does not exist: {folder}")
            elif not os.access(folder, os.W_OK):
                out.append(f"The output folder is not writable: {folder}. Choose another folder.")
            elif os.path.exists(path) and not self.overwrite:
                out.append(f"{path} exists: tick 'Overwrite existing outputs' or choose another name.")
        bbox_ok = self.bbox is not None and self.bbox[2] > self.bbox[0] and self.bbox[3] > self.bbox[1]
        if self.extent_mode is ExtentMode.CANVAS and not bbox_ok:
            out.append("The canvas view does not overlap the layer: pan to the layer or choose another extent.")
        if self.extent_mode in (ExtentMode.POLYGON_LAYER, ExtentMode.SELECTED_FEATURES) and not self.mask_path:
            out.append("Choose a polygon layer (with selected features for 'Selected features').")
        if self.device not in DEVICES:
            out.append(f"Device must be one of {', '.join(DEVICES)}.")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            out.append(f"Batch size must be 1..{MAX_BATCH_SIZE}.")
        if self.precision not in PRECISIONS:
            out.append(f"Precision must be one of {', '.join(PRECISIONS)}.")
        if self.bands is not None and (not self.bands or any(b < 1 for b in self.bands)):
            out.append("Band numbers start at 1.")
        if self.min_area_m2 < 0 or self.simplify_m < 0:
            out.append("Minimum area and simplify tolerance must be >= 0.")
        if parse_gsd_text(self.gsd) is None:
            out.append(f"GSD must be 'model', 'native' or a number of metres > 0, got {self.gsd!r}.")
        return out

    def engine_args(self) -> list[str]:
        """Arguments after ``<python> -m engine``: an argument list for QProcess, never a shell string."""
        args = ["predict", "--model", self.model_path, "--input", self.input_path, "--output", self.output_raster]
        if self.output_vector:
            args += ["--vector", self.output_vector, "--min-area", _num(self.min_area_m2)]
            args += ["--simplify", _num(self.simplify_m)]
        if self.output_confidence:
            args += ["--confidence", self.output_confidence]
        box = self.input_bbox if self.input_bbox is not None else self.bbox
        if box is not None and (self.input_bbox is not None or self.extent_mode is ExtentMode.CANVAS):
            args += ["--bbox", ",".join(_num(v) for v in box)]
        if self.extent_mode in (ExtentMode.POLYGON_LAYER, ExtentMode.SELECTED_FEATURES) and self.mask_path:
            args += ["--mask", self.mask_path]
        if self.bands:
            args += ["--bands", ",".join(str(b) for b in self.bands)]
        if self.gsd != GSD_MODEL:
            args += ["--gsd", parse_gsd_text(self.gsd) or self.gsd]
        args += ["--device", self.device, "--batch-size", str(self.batch_size)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.precision != "auto":
            args += ["--precision", self.precision]
        if self.overwrite:
            args.append("--overwrite")
        if self.resume:
            args.append("--resume")
        for key, value in self.extra.items():
            args += [key, value]
        return args

    def output_paths(self) -> list[str]:
        """The files this run may create."""
        return [p for p in (self.output_raster, self.output_vector, self.output_confidence) if p]


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _safe_stem(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "output"


def default_output_paths(input_path: str, model_path: str) -> dict[str, str]:
    """``raster``/``vector``/``confidence`` paths next to the input, named after the input and the model."""
    source = Path(input_path)
    base = f"{_safe_stem(source.stem)}_{_safe_stem(Path(model_path).stem)}"
    folder = source.parent
    return {
        "raster": str(folder / f"{base}_classes.tif"),
        "vector": str(folder / f"{base}_polygons.gpkg"),
        "confidence": str(folder / f"{base}_confidence.tif"),
    }


def parse_band_list(text: str) -> tuple[int, ...] | None:
    """``"3, 2, 1"`` → ``(3, 2, 1)``; empty text → None (engine default).

    Raises:
        InvalidParametersError: anything other than comma-separated positive integers.
    """
    text = text.strip()
    if not text:
        return None
    try:
        bands = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise InvalidParametersError(f"Bands must be comma-separated numbers like 1,2,3, got {text!r}") from exc
    if any(b < 1 for b in bands):
        raise InvalidParametersError("Band numbers start at 1.")
    return bands


def default_band_mapping(model_bands: tuple[str, ...], raster_band_names: list[str]) -> tuple[int, ...] | None:
    """The raster band (1-based) the engine picks for each model input band, by the engine's own rule.

    Calls :func:`engine.bands.map_bands` (standard library only), so the dialog shows what
    ``python -m engine predict`` does without ``--bands``: names matched by colour interpretation (with aliases such
    as ``nir``/``infrared``), else bands ``1..n`` in order when the raster has exactly as many non-alpha bands as the
    model needs.

    Args:
        model_bands: the model file's band names, e.g. ``("red", "green", "blue")`` or ``("nir", "red", "green")``.
        raster_band_names: each raster band's colour interpretation name (``"Red"``, ``"Gray"``, ``"Alpha"``, ...).

    Returns:
        One 1-based band number per model band, or None when the rule finds no mapping (the analyst must give one).
    """
    ensure_engine_importable()
    from engine.bands import RasterBand, map_bands
    from engine.errors import BandMismatchError

    try:
        return tuple(map_bands(model_bands, [RasterBand(colour=name) for name in raster_band_names]))
    except BandMismatchError:
        return None
