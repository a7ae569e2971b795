"""Candidate squares for ``python -m training suggest`` and the ranked, diverse pick among them (numpy only, with GDAL
reading the rasters a band of rows at a time).

**Candidates** (:func:`score_candidates`): squares of ``size`` × ``size`` raster pixels on a grid of step
``size // 2`` anchored to the raster's pixel (0, 0), plus the squares flush with the right and bottom edges
(:func:`engine.tiling.axis_spans`: the last square of a row or column is shifted back to the edge). For each grid row
of squares the ``size`` rows it covers are read once (memory: ``size`` × raster width), summed down the columns, and
the sums of every square of that row come from the differences of one running (integral) sum along the columns: the
mean uncertainty, the mean confidence, the count of pixels of each predicted class, of valid pixels and of labelled
pixels. A square is **eligible** when all its pixels are valid (predicted: not nodata, not masked) and none is
labelled already.

**The pick** (:func:`pick`), greedy, one square at a time:

1. the square with the highest ``score`` among the eligible ones that overlap no square already picked and keep a
   gap of at least one square size (:data:`MIN_GAP_SQUARES`) to each of them; when none is left, the gap is dropped
   and only overlap is forbidden;
2. ``score`` = mean uncertainty × (1 - :data:`DIVERSITY_WEIGHT` × the highest similarity of the square's predicted
   class mix to a square already picked), where the similarity of two mixes is their histogram intersection
   ``Σ_k min(share_k, share'_k)`` (1: the same classes in the same shares; 0: no class in common).

The first square is therefore the one with the highest mean uncertainty, and the next ones are pushed away from both
the places and the class mixes already suggested, so that ten squares do not all land in the same confused field.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from engine.errors import CancelledError
from engine.tiling import axis_spans

gdal.UseExceptions()

LABEL_NODATA = 255  # the engine's class-raster nodata
MIN_GAP_SQUARES = 1.0  # gap kept between suggested squares, in square sizes (dropped when no square is left)
DIVERSITY_WEIGHT = 0.5  # how much a class mix already suggested lowers a square's score (0: none, 1: to zero)


@dataclass
class Candidates:
    """Every candidate square of the grid (``N`` of them) and its statistics.

    Attributes:
        rows, cols: ``(N,)`` top-left raster pixel of each square.
        size: side in pixels.
        uncertainty: ``(N,)`` mean uncertainty over the square's valid pixels (0..1).
        confidence: ``(N,)`` mean confidence over the square's valid pixels (0..1).
        class_counts: ``(N, K)`` pixels predicted as each class.
        eligible: ``(N,)`` all pixels valid and none labelled.
    """

    rows: np.ndarray
    cols: np.ndarray
    size: int
    uncertainty: np.ndarray
    confidence: np.ndarray
    class_counts: np.ndarray
    eligible: np.ndarray

    @property
    def shares(self) -> np.ndarray:
        """``(N, K)`` share of each predicted class in each square."""
        return self.class_counts / float(self.size * self.size)


def _window_sums(columns: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Sums of ``columns[..., s:s+size]`` for each ``s`` in ``starts`` (a running sum along the last axis)."""
    running = np.concatenate([np.zeros((*columns.shape[:-1], 1)), np.cumsum(columns, axis=-1)], axis=-1)
    return running[..., starts + size] - running[..., starts]


def score_candidates(
    labels: str,
    uncertainty: str,
    confidence: str,
    labelled: str | None,
    size: int,
    num_classes: int,
    cancel: threading.Event | None = None,
) -> Candidates:
    """Read the engine's rasters (and the labelled-pixel mask) a band of ``size`` rows at a time; score every square.

    Args:
        labels: the class raster (uint8, nodata 255).
        uncertainty: the uncertainty raster (float32, nodata -1), on the same grid.
        confidence: the confidence raster (float32, nodata -1), on the same grid.
        labelled: a uint8 raster on the same grid, non-zero where labels exist (None: nothing labelled).
        size: square side in pixels (at most the raster's width and height).
        num_classes: K.
        cancel: checked once per band of rows.

    Raises:
        CancelledError: ``cancel`` was set.
    """
    datasets = {"labels": gdal.Open(labels), "unc": gdal.Open(uncertainty), "conf": gdal.Open(confidence)}
    if labelled is not None:
        datasets["done"] = gdal.Open(labelled)
    width, height = datasets["labels"].RasterXSize, datasets["labels"].RasterYSize
    starts_y = axis_spans(height, size, max(size // 2, 1))[:, 0]
    starts_x = axis_spans(width, size, max(size // 2, 1))[:, 0]
    stats: dict[str, list[np.ndarray]] = {k: [] for k in ("unc", "conf", "valid", "done", "classes")}
    for y in starts_y.tolist():
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled")
        band = {k: ds.GetRasterBand(1).ReadAsArray(0, y, width, size) for k, ds in datasets.items()}
        valid = band["labels"] != LABEL_NODATA
        columns = np.stack(
            [
                np.where(valid, band["unc"], 0.0).sum(axis=0, dtype=np.float64),
                np.where(valid, band["conf"], 0.0).sum(axis=0, dtype=np.float64),
                valid.sum(axis=0),
                (band["done"] > 0).sum(axis=0) if "done" in band else np.zeros(width),
                *[(band["labels"] == k).sum(axis=0) for k in range(num_classes)],
            ]
        )  # (4 + K, W)
        sums = _window_sums(columns, starts_x, size)  # (4 + K, squares in this row)
        for i, key in enumerate(("unc", "conf", "valid", "done")):
            stats[key].append(sums[i])
        stats["classes"].append(sums[4:].T)
    datasets = {}
    rows = np.repeat(starts_y, len(starts_x))
    cols = np.tile(starts_x, len(starts_y))
    valid, done = np.concatenate(stats["valid"]), np.concatenate(stats["done"])
    n = np.maximum(valid, 1)
    return Candidates(
        rows=rows,
        cols=cols,
        size=size,
        uncertainty=np.concatenate(stats["unc"]) / n,
        confidence=np.concatenate(stats["conf"]) / n,
        class_counts=np.rint(np.concatenate(stats["classes"])).astype(np.int64),
        eligible=(valid == size * size) & (done == 0),
    )


def pick(candidates: Candidates, count: int) -> list[tuple[int, float]]:
    """The ``count`` squares to suggest, best first: ``(candidate index, score)`` (fewer when fewer fit).

    See the module docstring for the rule.
    """
    c = candidates
    shares = c.shares
    n = c.rows.size
    similarity = np.zeros(n)  # highest class-mix similarity to a picked square
    gap = np.full(n, np.inf)  # smallest gap (pixels) to a picked square; negative: overlapping it
    taken = np.zeros(n, bool)
    chosen: list[tuple[int, float]] = []
    for min_gap in (MIN_GAP_SQUARES * c.size, 0.0):
        while len(chosen) < count:
            allowed = c.eligible & ~taken & (gap >= min_gap)
            if not allowed.any():
                break
            score = np.where(allowed, c.uncertainty * (1.0 - DIVERSITY_WEIGHT * similarity), -np.inf)
            best = int(np.argmax(score))
            chosen.append((best, float(score[best])))
            taken[best] = True
            similarity = np.maximum(similarity, np.minimum(shares, shares[best]).sum(axis=1))
            apart = np.maximum(np.abs(c.rows - c.rows[best]), np.abs(c.cols - c.cols[best])) - c.size
            gap = np.minimum(gap, apart)
    return chosen
