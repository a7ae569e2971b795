"""``python -m training accuracy``: a class raster against reference labels, classes matched by name.

- The prediction is a single-band class raster as the engine writes it: pixel value = class id, class names from its
  category names (or its ``CLASS_NAMES`` metadata); without names, the values themselves are the names. Its nodata
  value (255 for the engine's outputs) is not compared.
- The reference is polygons with a class field (any OGR format and CRS) or a class raster on any grid, rasterised or
  warped onto the prediction's grid (:mod:`training.finetune.labels`); unlabelled pixels are not compared.
- Classes are matched by name. When no reference value is a prediction class name and every reference value is an
  integer, the values are taken as class ids. Reference classes the prediction does not have become extra classes
  (never predicted: recall 0); prediction classes absent from both sides have NaN metrics and are left out of the
  means (mmseg's rule, :mod:`training.metrics`).
- One confusion matrix ``counts[reference, prediction]`` over all compared pixels, read in row chunks (bounded
  memory). ``OA``, ``kappa``, ``mIoU``, ``mF1`` are ×100.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from osgeo import gdal

from engine import raster_io
from engine.errors import CancelledError, ParameterError
from engine.tiling import Window
from training.finetune.classes import ClassTable, value_key
from training.finetune.labels import LabelSource, category_names
from training.metrics import ConfusionMatrix, format_table, summarize, write_json

CHUNK_ROWS = 512


def prediction_classes(ds: gdal.Dataset) -> list[str]:
    """Class names by pixel value of a class raster (category names, ``CLASS_NAMES``, or the values 0..max)."""
    names = category_names(ds)
    band = ds.GetRasterBand(1)
    if names:
        return [value_key(n) for n in names]
    top = int(band.ComputeRasterMinMax(False)[1])
    nodata = band.GetNoDataValue()
    return [str(v) for v in range(top + 1) if nodata is None or v != nodata]


def match_classes(predicted: list[str], reference: list[str]) -> ClassTable:
    """The combined class table: the prediction's classes (ids = pixel values), then unmatched reference classes."""
    names = list(predicted)
    codes = {n: i for i, n in enumerate(predicted)}
    if not set(reference) & set(predicted) and reference and all(v.lstrip("+-").isdigit() for v in reference):
        by_id = {str(i): i for i in range(len(predicted))}
        codes = {**codes, **{v: by_id[v] for v in reference if v in by_id}}
    for v in reference:
        if v not in codes:
            codes[v] = len(names)
            names.append(v)
    return ClassTable(tuple(names), tuple((0, 0, 0) for _ in names), codes)


def accuracy(
    prediction: str,
    reference: str,
    class_field: str | None = None,
    output: str | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Compare ``prediction`` with ``reference`` (see the module docstring); write ``output`` JSON when given.

    Raises:
        engine.errors.ParameterError: unreadable inputs, no overlap, or no pixel to compare.
    """
    if output:
        from engine.outputs import check_output_path

        check_output_path(output, overwrite=True)
    ds = raster_io.open_raster(prediction)
    if ds.RasterCount != 1:
        raise ParameterError(f"--prediction {prediction} has {ds.RasterCount} bands; a class raster has one")
    refs = LabelSource(reference, class_field)
    predicted = prediction_classes(ds)
    table = match_classes(predicted, list(refs.values()))
    extent = refs.pixel_extent(ds)
    if extent is None:
        raise ParameterError(
            f"the reference {os.path.basename(reference)} and the prediction {os.path.basename(prediction)} do not "
            "overlap",
            "check that both cover the same place (and the reference's CRS)",
        )
    band = ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    matrix = ConfusionMatrix(table.num_classes, 255)
    for y in range(extent.row, extent.row_end, CHUNK_ROWS):
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled")
        win = Window(y, extent.col, min(CHUNK_ROWS, extent.row_end - y), extent.width)
        pred = band.ReadAsArray(win.col, win.row, win.width, win.height).astype(np.int64)
        ref = refs.burn(ds, win, table)
        keep = (ref != 255) & (pred >= 0) & (pred < len(predicted))
        if nodata is not None:
            keep &= pred != nodata
        matrix.update(pred[keep], ref[keep])
    if matrix.counts.sum() == 0:
        raise ParameterError(
            "no reference pixel falls on a predicted pixel",
            "check that the reference labels lie inside the predicted area (not on its nodata)",
        )
    report = summarize(matrix.counts, table.names)
    report["pixels"] = int(matrix.counts.sum())
    report["prediction"], report["reference"] = os.path.abspath(prediction), os.path.abspath(reference)
    if output:
        write_json(report, output)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The per-class table and a summary line with OA and kappa."""
    return (
        format_table(report, ("mIoU", "mFscore"))
        + f"\nOA {report['OA']:.2f}  kappa {report['kappa']:.2f}  on {report['pixels']} pixels"
    )
