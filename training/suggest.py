"""Where to label next: squares of a raster where new labels are expected to help the model most.

::

    from training.suggest import SuggestRequest, suggest
    result = suggest(SuggestRequest(model="m.rspmodel", raster="ortho.tif", labels="labels.gpkg"), on_event=print)

Steps: check the inputs (model file, raster, ``--size``, the output path, the labels) before anything runs; burn the
existing labels (any geometry: polygons, lines, points; reprojected to the raster's CRS; every pixel they touch) into
a mask on the raster's grid; segment the raster with the engine (:func:`engine.predict.predict`, the model's tile,
stride and precision, no compilation, so the time is predictable) into a temporary folder, with its uncertainty
raster (``1 - (p1 - p2)``, :func:`engine.blending.margin_uncertainty`) and confidence raster; score the candidate
squares and pick the ranked, diverse set (:mod:`training.suggest_squares`); write them as a GeoPackage layer
(:data:`LAYER_NAME`) in the labels' CRS (the analyst digitises there), else the raster's, under a temporary name
renamed onto the output at the end.

Fields of each square: ``rank`` (1 = label first), ``uncertainty`` (mean over its pixels, 0..1), ``score`` (the
uncertainty after the diversity rule, within the square's stratum: :mod:`training.suggest_squares`), ``predicted``
(the class the model predicts most there), ``predicted_share`` (that class's share of the pixels), ``classes``
(number of classes predicted in it), ``mean_confidence`` (mean top-class probability), ``col``/``row`` (its top-left
raster pixel) and ``size_px``.

Events (the engine's contract, :mod:`engine.events`): ``start``, ``status`` (each step), the engine's ``progress``
and ``warning`` events during the segmentation (``stage``: ``"predict"``), ``done`` (``outputs``:
``{"suggestions": path}``, ``suggestions``: the squares' fields, ``seconds``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from osgeo import gdal, ogr, osr

from engine.atomic import commit, remove_with_sidecars, temporary_path
from engine.errors import CancelledError, ParameterError
from engine.events import DONE, PROGRESS, START, STATUS, WARNING, EventCallback, event
from engine.georef import get_srs
from engine.model_file import ModelInfo, read_model_info
from training.finetune.labels import split_layer_path
from training.suggest_squares import Candidates, pick, score_candidates

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()
log = logging.getLogger("training")

DEFAULT_COUNT = 10
MIN_SIZE = 8  # pixels: smaller squares say nothing an analyst can label
LAYER_NAME = "suggestions"
OUTPUT_SUFFIX = "_suggestions.gpkg"
SUGGESTIONS = "suggestions"  # the output role in the done event
EDGE_POINTS = 8  # points per edge of a square reprojected to the labels' CRS (its edges may curve there)


@dataclass(frozen=True)
class SuggestRequest:
    """What ``python -m training suggest`` is asked (each field is the option of its name).

    Attributes:
        model: model file (``.rspmodel``).
        raster: GDAL raster to suggest squares on.
        labels: existing labels (any OGR vector, any geometry and CRS): squares never overlap them.
        class_field: with ``labels``: only features whose field is set count as labelled.
        count: squares to suggest (fewer when fewer fit).
        size: square side in raster pixels (default: the model's tile size).
        output: GeoPackage to write (default: ``<raster stem>_suggestions.gpkg`` next to the raster).
        overwrite: replace an existing output.
        device: ``cpu`` or ``cuda[:N]`` (default: CUDA when available).
    """

    model: str
    raster: str
    labels: str | None = None
    class_field: str | None = None
    count: int = DEFAULT_COUNT
    size: int | None = None
    output: str | None = None
    overwrite: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        """Check the options that need no file."""
        if self.count < 1:
            raise ParameterError(f"--count must be >= 1, got {self.count}")
        if self.size is not None and self.size < MIN_SIZE:
            raise ParameterError(f"--size must be >= {MIN_SIZE} pixels, got {self.size}")
        if self.class_field and not self.labels:
            raise ParameterError("--class-field needs --labels")

    def output_path(self) -> str:
        """``output``, or ``<raster stem>_suggestions.gpkg`` next to the raster (the working folder for a URL)."""
        if self.output:
            return self.output
        folder, name = os.path.split(self.raster)
        folder = folder if folder and os.path.isdir(folder) else "."
        return os.path.join(folder, os.path.splitext(name)[0] + OUTPUT_SUFFIX)


@dataclass
class SuggestResult:
    """What :func:`suggest` wrote: the output path, the squares' fields (rank order), and the wall time."""

    output: str
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def suggest(
    request: SuggestRequest, on_event: EventCallback | None = None, cancel: threading.Event | None = None
) -> SuggestResult:
    """Run ``request`` (see the module docstring); nothing is written under the output unless it finishes.

    Raises:
        engine.errors.EngineError subclasses (one-line message and hint), ``engine.model_file.ModelFileError``,
        ``engine.errors.CancelledError``.
    """
    t0 = time.monotonic()
    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    from engine.outputs import check_output_path
    from engine.raster_io import open_raster

    info = read_model_info(request.model)
    source = open_raster(request.raster)
    size = request.size or info.tile_size
    if size > min(source.RasterXSize, source.RasterYSize):
        raise ParameterError(
            f"--size {size} is larger than the raster ({source.RasterXSize} x {source.RasterYSize} pixels)",
            "pass a smaller --size",
        )
    output = request.output_path()
    check_output_path(output, request.overwrite)
    emit(event(START, raster=request.raster, model=request.model, labels=request.labels, count=request.count,
               size=size, output=output, width=source.RasterXSize, height=source.RasterYSize))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rsp-suggest-") as scratch:
        labelled, labels_srs = None, None
        if request.labels:
            labelled = os.path.join(scratch, "labelled.tif")
            labels_srs = burn_labels(request.labels, request.class_field, source, labelled)
        rasters = segment(request, scratch, emit, cancel)
        emit(event(STATUS, message="ranking the candidate squares"))
        candidates = score_candidates(rasters["labels"], rasters["uncertainty"], rasters["confidence"], labelled,
                                      size, info.num_classes, cancel)  # fmt: skip
    chosen = pick(candidates, request.count)
    if not chosen:
        raise ParameterError(
            f"no square of {size} x {size} pixels lies wholly inside the raster's valid pixels and outside the labels",
            "pass a smaller --size",
        )
    if len(chosen) < request.count:
        emit(event(WARNING, message=f"only {len(chosen)} of {request.count} squares fit without overlapping"))
    squares = describe(candidates, chosen, info)
    if cancel.is_set():
        raise CancelledError("cancelled")
    write_squares(output, squares, source, labels_srs or get_srs(source))
    seconds = round(time.monotonic() - t0, 3)
    emit(event(DONE, outputs={SUGGESTIONS: output}, suggestions=squares, seconds=seconds))
    return SuggestResult(output, squares, seconds)


def segment(request: SuggestRequest, folder: str, emit: EventCallback, cancel: threading.Event) -> dict[str, str]:
    """Segment the whole raster into ``folder``: ``{"labels", "uncertainty", "confidence"}`` paths.

    The engine's ``progress`` and ``warning`` events are passed on with ``stage: "predict"``.
    """
    from engine.predict import PredictRequest, predict

    paths = {role: os.path.join(folder, f"{role}.tif") for role in ("labels", "uncertainty", "confidence")}

    def forward(e: dict[str, Any]) -> None:
        if e.get("event") in (PROGRESS, WARNING):
            emit({**e, "stage": "predict"})

    emit(event(STATUS, message="segmenting the raster"))
    predict(
        PredictRequest(model=request.model, input=request.raster, output=paths["labels"],
                       uncertainty=paths["uncertainty"], confidence=paths["confidence"], device=request.device,
                       compile="off"),
        on_event=forward,
        cancel=cancel,
    )  # fmt: skip
    return paths


def _label_layer(path: str) -> tuple[ogr.DataSource, ogr.Layer]:
    base, name = split_layer_path(path)
    if not os.path.exists(base) and not base.startswith("/vsi"):
        raise ParameterError(f"--labels not found: {base}")
    try:
        src = ogr.Open(base)
    except RuntimeError as exc:
        raise ParameterError(f"cannot read --labels {base} as vector data: {exc}") from exc
    if src is None or src.GetLayerCount() == 0:
        raise ParameterError(f"--labels {base} holds no vector layer (points, lines or polygons)")
    layer = src.GetLayerByName(name) if name else src.GetLayer(0)
    if layer is None:
        raise ParameterError(f"--labels {base} has no layer {name!r}")
    return src, layer


def burn_labels(path: str, class_field: str | None, raster: gdal.Dataset, out: str) -> osr.SpatialReference | None:
    """Burn every pixel of ``raster``'s grid that a label feature touches into the uint8 GeoTIFF ``out``.

    Returns:
        the labels' CRS (None when they have none: then taken to be the raster's).

    Raises:
        ParameterError: unreadable labels, a missing ``class_field``, no features, or none over the raster.
    """
    _src, layer = _label_layer(path)  # _src keeps the layer alive
    defn = layer.GetLayerDefn()
    if class_field and defn.GetFieldIndex(class_field) < 0:
        fields = ", ".join(defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())) or "none"
        raise ParameterError(f"--labels {path} has no field {class_field!r}; its fields: {fields}")
    labels_srs, raster_srs = layer.GetSpatialRef(), get_srs(raster)
    ct = None
    if labels_srs is not None:
        labels_srs = labels_srs.Clone()
        labels_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if raster_srs is not None and not labels_srs.IsSame(raster_srs):
            ct = osr.CoordinateTransformation(labels_srs, raster_srs)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("labels")
    copy = mem.CreateLayer("labels", srs=raster_srs, geom_type=ogr.wkbUnknown)
    count = 0
    layer.ResetReading()
    for feat in layer:
        geom = feat.GetGeometryRef()
        if geom is None or geom.IsEmpty() or (class_field and not feat.IsFieldSetAndNotNull(class_field)):
            continue
        geom = geom.Clone()
        if ct is not None:
            geom.Transform(ct)
        out_feat = ogr.Feature(copy.GetLayerDefn())
        out_feat.SetGeometry(geom)
        copy.CreateFeature(out_feat)
        count += 1
    if count == 0:
        which = f" with {class_field!r} set" if class_field else ""
        raise ParameterError(f"--labels {path} has no features{which}", "give the layer of labels you digitised")
    grid = gdal.GetDriverByName("GTiff").Create(
        out,
        raster.RasterXSize,
        raster.RasterYSize,
        1,
        gdal.GDT_Byte,
        ["TILED=YES", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE"],
    )
    grid.SetGeoTransform(raster.GetGeoTransform())
    if raster.GetProjection():
        grid.SetProjection(raster.GetProjection())
    gdal.RasterizeLayer(grid, [1], copy, burn_values=[1], options=["ALL_TOUCHED=TRUE"])
    touched = grid.GetRasterBand(1).ComputeRasterMinMax(False)[1] > 0
    grid = None
    if not touched:
        raise ParameterError(
            f"the labels of {path} do not overlap the raster {raster.GetDescription()}",
            "give the labels digitised on this raster (their CRS may differ; it is converted)",
        )
    return labels_srs


def describe(candidates: Candidates, chosen: list[tuple[int, float]], info: ModelInfo) -> list[dict[str, Any]]:
    """The fields of each chosen square, in rank order (see the module docstring)."""
    squares = []
    area = float(candidates.size * candidates.size)
    for rank, (i, score) in enumerate(chosen, start=1):
        counts = candidates.class_counts[i]
        top = int(counts.argmax())
        squares.append({
            "rank": rank,
            "uncertainty": round(float(candidates.uncertainty[i]), 6),
            "score": round(score, 6),
            "predicted": info.class_names[top],
            "predicted_share": round(float(counts[top]) / area, 6),
            "classes": int((counts > 0).sum()),
            "mean_confidence": round(float(candidates.confidence[i]), 6),
            "col": int(candidates.cols[i]),
            "row": int(candidates.rows[i]),
            "size_px": candidates.size,
        })  # fmt: skip
    return squares


def square_ring(raster: gdal.Dataset, col: int, row: int, size: int, points: int) -> ogr.Geometry:
    """The square's outline in the raster's CRS, ``points`` points per edge (clockwise from the top-left corner)."""
    gt = raster.GetGeoTransform()
    steps = [size * k / points for k in range(points)]
    pixels = ([(col + s, row) for s in steps] + [(col + size, row + s) for s in steps]
              + [(col + size - s, row + size) for s in steps] + [(col, row + size - s) for s in steps])  # fmt: skip
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for c, r in [*pixels, pixels[0]]:
        ring.AddPoint_2D(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5])
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


FIELDS = (
    ("rank", ogr.OFTInteger),
    ("uncertainty", ogr.OFTReal),
    ("score", ogr.OFTReal),
    ("predicted", ogr.OFTString),
    ("predicted_share", ogr.OFTReal),
    ("classes", ogr.OFTInteger),
    ("mean_confidence", ogr.OFTReal),
    ("col", ogr.OFTInteger),
    ("row", ogr.OFTInteger),
    ("size_px", ogr.OFTInteger),
)


def write_squares(
    output: str, squares: list[dict[str, Any]], raster: gdal.Dataset, srs: osr.SpatialReference | None
) -> None:
    """Write ``squares`` as the GeoPackage layer :data:`LAYER_NAME` of ``output`` in ``srs`` (atomically)."""
    from engine.errors import OutputPathError

    raster_srs = get_srs(raster)
    ct = None
    if srs is not None and raster_srs is not None and not srs.IsSame(raster_srs):
        ct = osr.CoordinateTransformation(raster_srs, srs)
    tmp = temporary_path(output)
    try:
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(tmp)
        layer = ds.CreateLayer(LAYER_NAME, srs=srs if srs is not None else raster_srs, geom_type=ogr.wkbPolygon)
        for name, kind in FIELDS:
            layer.CreateField(ogr.FieldDefn(name, kind))
        layer.StartTransaction()
        for square in squares:
            geom = square_ring(raster, square["col"], square["row"], square["size_px"], EDGE_POINTS if ct else 1)
            if ct is not None:
                geom.Transform(ct)
            feat = ogr.Feature(layer.GetLayerDefn())
            for name, _kind in FIELDS:
                feat.SetField(name, square[name])
            feat.SetGeometry(geom)
            layer.CreateFeature(feat)
        layer.CommitTransaction()
        layer = ds = None
        commit(tmp, output)
    except RuntimeError as exc:
        remove_with_sidecars([tmp])
        raise OutputPathError(f"cannot write {output}: {exc}", "choose another --output") from exc
    except BaseException:
        remove_with_sidecars([tmp])
        raise
