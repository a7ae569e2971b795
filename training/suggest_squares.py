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

**The pick** (:func:`pick`), greedy, one square at a time, *stratified by predicted content*:

1. every eligible square belongs to the **stratum** of the class it predicts most; a stratum's weight is the square
   root of its number of eligible squares (:data:`STRATUM_POWER`: the area it covers, its imbalance softened, as the
   fine-tuning sampler softens the labels' class imbalance);
2. the next square comes from the stratum with the highest ``weight / (squares picked from it + 1)`` (the highest
   averages rule of seat apportionment), so the picks follow the area's predicted class mix, the rare classes
   over-represented; ties go to the larger stratum;
3. within that stratum, the square with the highest ``score`` among those that overlap no square already picked and
   keep a gap of at least one square size (:data:`MIN_GAP_SQUARES`) to each of them (when none is left anywhere, the
   gap is dropped and only overlap is forbidden); ``score`` = mean uncertainty × (1 - :data:`DIVERSITY_WEIGHT` × the
   highest similarity of the square's predicted class mix to a square already picked), the similarity of two mixes
   being their histogram intersection ``Σ_k min(share_k, share'_k)`` (1: the same classes in the same shares).

Why stratified (``python -m bench.guided_labelling``, README): picking by uncertainty alone, with only the diversity
term of step 3, did worse than squares at random after every round (mean of four real scenes, −4.1 mIoU after round
3): with a few labelled squares the most uncertain places are of one or two kinds (boundaries, the class the model
knows least), while random squares follow the scene's class mix, which is what a test area holds. The strata keep
that coverage; the uncertainty chooses the square within each.
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
STRATUM_POWER = 0.5  # a stratum's weight: (its eligible squares) ** STRATUM_POWER (1: ∝ area, 0: every class alike)


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

    See the module docstring for the rule. The score is the square's within its stratum, so it need not fall with rank.
    """
    c = candidates
    shares = c.shares
    n = c.rows.size
    stratum = np.argmax(c.class_counts, axis=1)  # (N,): the class each square predicts most
    classes = c.class_counts.shape[1]
    weight = np.bincount(stratum[c.eligible], minlength=classes).astype(np.float64) ** STRATUM_POWER
    picked = np.zeros(classes)
    similarity = np.zeros(n)  # highest class-mix similarity to a picked square
    gap = np.full(n, np.inf)  # smallest gap (pixels) to a picked square; negative: overlapping it
    taken = np.zeros(n, bool)
    chosen: list[tuple[int, float]] = []
    for min_gap in (MIN_GAP_SQUARES * c.size, 0.0):
        while len(chosen) < count:
            allowed = c.eligible & ~taken & (gap >= min_gap)
            if not allowed.any():
                break
            open_strata = np.bincount(stratum[allowed], minlength=classes) > 0
            priority = np.where(open_strata, weight / (picked + 1.0), -np.inf)
            best_stratum = int(np.lexsort((weight, priority))[-1])  # highest priority; ties: the larger stratum
            allowed &= stratum == best_stratum
            score = np.where(allowed, c.uncertainty * (1.0 - DIVERSITY_WEIGHT * similarity), -np.inf)
            best = int(np.argmax(score))
            chosen.append((best, float(score[best])))
            taken[best] = True
            picked[best_stratum] += 1
            similarity = np.maximum(similarity, np.minimum(shares, shares[best]).sum(axis=1))
            apart = np.maximum(np.abs(c.rows - c.rows[best]), np.abs(c.cols - c.cols[best])) - c.size
            gap = np.minimum(gap, apart)
    return chosen
