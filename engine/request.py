"""What a run is asked to do (:class:`PredictRequest`), what it produced (:class:`PredictResult`), and the run's
prepared context (:class:`RunContext`).

Its own module so that every part of a run (:mod:`engine.predict`, :mod:`engine.resume`, :mod:`engine.inference`)
imports it from below, and none imports another for its types. :mod:`engine.predict` re-exports the three names
(the engine's public API: ``from engine.predict import PredictRequest, predict``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from osgeo import gdal

from engine import events, georef, options, outputs, raster_io
from engine.errors import CancelledError, ParameterError
from engine.events import EventCallback
from engine.masks import PolygonMask
from engine.model_file import ModelInfo
from engine.precision import PRECISIONS, resolve_precision
from engine.tiling import Window

MIN_TILE, MAX_TILE = options.MIN_TILE, options.MAX_TILE


@dataclass(frozen=True)
class PredictRequest:
    """What to segment and where to write it (mirrors ``python -m engine predict``'s options).

    Attributes:
        model: model file (``.rspmodel``).
        input: GDAL-readable raster: a file or any GDAL dataset name (``/vsicurl/``, ``/vsizip/``, an ``http(s)://``
            URL, a WMS/XYZ service description; see :mod:`engine.sources`).
        output: class-id GeoTIFF to write (uint8, nodata 255).
        vector: optional GeoPackage of polygons (``class_id``, ``class_name``, ``area_m2``, ``confidence``: the mean
            of the chosen class's probability over the polygon's pixels).
        confidence: optional float32 GeoTIFF of the chosen class's probability (nodata -1).
        uncertainty: optional float32 GeoTIFF of ``1 - (p1 - p2)``, one minus the margin between the two most
            probable classes (0..1, nodata -1; :func:`engine.blending.margin_uncertainty`).
        window: pixel window ``(xoff, yoff, xsize, ysize)`` of the source raster (GDAL order).
        bbox: ``(xmin, ymin, xmax, ymax)`` in ``bbox_crs`` (default: the raster's CRS).
        mask: vector file whose polygons limit the processed area (pixels outside are nodata).
        gsd: the GSD the network reads the raster at: ``"model"`` (the model file's, default), ``"native"`` (the
            raster's own) or metres (a float or its text); see :func:`engine.georef.parse_gsd`.
        bands: 1-based raster bands feeding the model's inputs in order (default: :func:`engine.bands.map_bands`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; None = CUDA when available, else CPU.
        batch_size: windows per forward pass; None (default): 4, or 1 with ``exact``
            (:func:`engine.options.batch_size_for`); the run uses :attr:`windows_per_pass`.
        threads: ``torch.set_num_threads`` (None = torch's default).
        tile, stride: window size and step in pixels (default: the model file's).
        blend: ``"smooth"`` or ``"reference"`` (see :mod:`engine.blending`).
        compile: ``"auto"``, ``"on"`` or ``"off"``: run the network through ``torch.compile`` (see
            :func:`engine.inference.compile_decision`; ``auto`` compiles on CPU when a C++ compiler exists and the
            expected saving beats the compile cost, :mod:`engine.compile_plan`).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :mod:`engine.precision`): ``auto`` is bf16 on devices
            with native bfloat16 for architectures whose bf16 labels were measured ≥ 99.5 % equal to fp32's, fp32
            otherwise and always with ``exact`` or ``blend="reference"``.
        exact: keep the reference code's float order in the decode head. Default False: the head's low-resolution
            fusion (:meth:`engine.models.segmentor.UperNet.set_lowres_fusion`), the same function ≈ 1.3× faster,
            logits within ≈ 1e-6 of the reference's.
        value_max: raster value that maps to the top of the model's value range (default: see
            :func:`engine.raster_io.input_range`).
        min_area: polygons smaller than this (m², or pixels when the raster has no CRS) are merged into their
            neighbours before vectorising.
        simplify: polygon simplification tolerance in ground metres (0 = none).
        cog: write the class raster (and confidence) as Cloud-Optimized GeoTIFF.
        overwrite: replace existing outputs.
        resume: continue the unfinished run for ``output`` (same input, model and pixel options; see
            :mod:`engine.resume`) instead of removing it and starting from the beginning.
    """

    model: str
    input: str
    output: str
    vector: str | None = None
    confidence: str | None = None
    uncertainty: str | None = None
    window: tuple[int, int, int, int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    mask: str | None = None
    bands: tuple[int, ...] | None = None
    gsd: str | float = georef.GSD_MODEL
    device: str | None = None
    batch_size: int | None = None
    threads: int | None = None
    tile: int | None = None
    stride: int | None = None
    blend: str = options.BLEND_DEFAULT
    exact: bool = False
    compile: str = options.COMPILE_DEFAULT
    precision: str = options.PRECISION_DEFAULT
    value_max: float | None = None
    min_area: float = 0.0
    simplify: float = 0.0
    cog: bool = False
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        """Check the options that need no file; :class:`ParameterError` says which one is wrong."""
        object.__setattr__(self, "gsd", georef.parse_gsd(self.gsd))
        if sum(x is not None for x in (self.window, self.bbox)) > 1:
            raise ParameterError("give at most one of --window and --bbox")
        if self.compile not in options.COMPILE_MODES:
            raise ParameterError(f"--compile must be one of {', '.join(options.COMPILE_MODES)}, got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ParameterError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.tile is not None and not MIN_TILE <= self.tile <= MAX_TILE:
            raise ParameterError(f"--tile must be in {MIN_TILE}..{MAX_TILE} pixels, got {self.tile}")
        if self.stride is not None and self.stride < 1:
            raise ParameterError(f"--stride must be >= 1, got {self.stride}")
        if self.value_max is not None and not self.value_max > 0:
            raise ParameterError(f"--value-max must be > 0, got {self.value_max}")
        if self.threads is not None and self.threads < 1:
            raise ParameterError(f"--threads must be >= 1, got {self.threads}")
        if self.min_area < 0 or self.simplify < 0:
            raise ParameterError("--min-area and --simplify must be >= 0")
        if self.blend not in options.BLEND_MODES:
            raise ParameterError(f"unknown blend mode {self.blend!r}; use one of {', '.join(options.BLEND_MODES)}")
        outs = [os.path.abspath(p) for p in (self.output, self.vector, self.confidence, self.uncertainty) if p]
        if len(set(outs)) != len(outs) or os.path.abspath(self.input) in outs:
            raise ParameterError("--output, --vector, --confidence, --uncertainty and --input must be different files")

    @property
    def windows_per_pass(self) -> int:
        """``batch_size``, or its default when not given (:func:`engine.options.batch_size_for`)."""
        return options.batch_size_for(self.batch_size, self.exact)

    def output_paths(self) -> dict[str, str]:
        """``{role: path}`` of the requested outputs (roles of :mod:`engine.events`)."""
        return outputs.output_paths(self.output, self.confidence, self.vector, self.uncertainty)

    @property
    def polygon_confidence(self) -> bool:
        """Whether the run writes a confidence raster for its polygons only (``--vector`` without ``--confidence``)."""
        return bool(self.vector) and not self.confidence

    def run_paths(self) -> dict[str, str]:
        """:meth:`output_paths` plus, with :attr:`polygon_confidence`, the ``confidence`` raster the polygons need
        (:func:`engine.outputs.polygon_confidence_path`, removed once they are written)."""
        paths = self.output_paths()
        if self.polygon_confidence:
            paths[events.CONFIDENCE] = outputs.polygon_confidence_path(self.output)
        return paths

    def raster_paths(self) -> dict[str, str]:
        """``{role: path}`` of the rasters the run writes row by row (labels first; see :meth:`run_paths`)."""
        paths = self.run_paths()
        return {role: paths[role] for role in outputs.RASTER_ROLES if role in paths}


@dataclass
class PredictResult:
    """What a run produced.

    Attributes:
        outputs: ``{"labels": path, "confidence": path?, "uncertainty": path?, "vector": path?}``.
        classes: per class ``{"id", "name", "pixels", "area_m2"}`` (``area_m2`` None without CRS).
        windows: windows run through the network (fully masked windows are skipped and not counted).
        seconds: wall time of the run.
    """

    outputs: dict[str, str]
    classes: list[dict[str, Any]]
    windows: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything prepared once per run (shared by the single-process and distributed paths)."""

    request: PredictRequest
    info: ModelInfo
    tile: int
    stride: int
    source: gdal.Dataset
    work: gdal.Dataset
    bands: list[int]
    normalizer: raster_io.Normalizer
    region_src: Window  # on the source grid
    region_work: Window  # on the work grid (= region_src when not resampled)
    polygons: PolygonMask | None
    on_event: EventCallback
    cancel: threading.Event

    @property
    def resampled(self) -> bool:
        """Whether the network reads a resampled work grid (the raster's GSD differs from the model's)."""
        return self.work is not self.source

    def emit(self, name: str, **fields: Any) -> None:
        """Send the event ``name`` with ``fields`` to the run's ``on_event``."""
        self.on_event(events.event(name, **fields))

    def precision_for(self, device: Any) -> str:
        """The precision this run computes in on ``device``: ``"fp32"`` or ``"bf16"`` (:mod:`engine.precision`)."""
        from engine.models import ARCHS

        spec = ARCHS.get(self.info.arch)
        agreement = spec.bf16_agreement if spec is not None else None
        req = self.request
        return resolve_precision(req.precision, device.type, agreement, exact=req.exact, blend=req.blend)

    def check_cancel(self) -> None:
        """Raise :class:`CancelledError` when the run was cancelled."""
        if self.cancel.is_set():
            raise CancelledError("cancelled")
