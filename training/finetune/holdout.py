"""Accuracy on data the model did not train on, measured the way the analyst will use the model.

Each held-out block is segmented by ``engine.predict.predict`` (the engine's own sliding-window inference, reading
the *source* raster at the model's GSD exactly as ``python -m engine predict`` will, labels written on the source
grid), and compared with the reference labels rasterised on the source grid. One confusion matrix over all blocks
of all rasters (:mod:`training.metrics`): OA, kappa, mIoU, mF1 and per-class IoU/F1/precision/recall.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from osgeo import gdal

from engine import georef, raster_io
from engine.atomic import remove_with_sidecars
from training.finetune.classes import IGNORE, ClassTable
from training.finetune.prepare import Prepared
from training.metrics import ConfusionMatrix, summarize


def compare(matrix: ConfusionMatrix, prediction: np.ndarray, reference: np.ndarray, num_predicted: int) -> None:
    """Add the pixels labelled in ``reference`` and predicted (not nodata) in ``prediction`` to ``matrix``."""
    keep = (reference != IGNORE) & (prediction < num_predicted)
    matrix.update(prediction[keep], reference[keep])


def evaluate_holdout(
    model_path: str,
    network: tuple[Any, Any],
    data: Prepared,
    table: ClassTable,
    work_dir: str,
    batch_size: int,
    cancel: threading.Event,
    on_block: Any = None,
) -> dict[str, Any]:
    """Segment every held-out block with the engine and return :func:`training.metrics.summarize`'s dict.

    Args:
        model_path: the fine-tuned model file (its GSD, bands and normalisation are what the engine applies).
        network: the loaded ``(model, torch.device)``, passed to ``engine.predict.predict``.
        data: the run's rasters, splits and label sources.
        table: the classes (ids of the confusion matrix).
        work_dir: where the engine writes each block's prediction (removed afterwards).
        batch_size: windows per forward pass.
        cancel: stops the evaluation (``engine.errors.CancelledError``).
        on_block: called with ``(done, total)`` blocks.
    """
    from engine.predict import PredictRequest, predict

    k = table.num_classes
    matrix = ConfusionMatrix(k, IGNORE)
    jobs = [(i, b) for i, s in enumerate(data.splits) for b in s.holdout_blocks]
    out = os.path.join(work_dir, "holdout_prediction.tif")
    for n, (i, block) in enumerate(jobs):
        source = raster_io.open_raster(data.rasters[i])
        win = georef.covering_window(block, data.sources[i].dataset(), source)
        request = PredictRequest(
            model=model_path,
            input=data.rasters[i],
            output=out,
            window=(win.col, win.row, win.width, win.height),
            bands=tuple(data.sources[i].bands),
            batch_size=batch_size,
            compile="off",
            overwrite=True,
        )
        predict(request, cancel=cancel, network=network)
        ds = gdal.Open(out)
        prediction = ds.GetRasterBand(1).ReadAsArray()
        ds = None
        compare(matrix, prediction, data.labels[i].burn(source, win, table), k)
        if on_block is not None:
            on_block(n + 1, len(jobs))
    remove_with_sidecars([out])
    summary = summarize(matrix.counts, table.names)
    summary["holdout_blocks"] = len(jobs)
    summary["holdout_pixels"] = int(matrix.counts.sum())
    return summary
