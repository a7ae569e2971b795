"""The spatial hold-out: labelled blocks, which are held out, and training chips that never touch them.

A random split of overlapping tiles puts near-copies of the same pixels on both sides and flatters the model. Here
the labelled area of each raster is cut into square **blocks** of :func:`block_size` (half a tile) on a grid anchored
to the raster's pixel (0, 0); a ``val_fraction`` of the blocks that hold labels is held out, and a training **chip**
(a ``tile``-sized window) is kept only when it overlaps no held-out block. The recipes train on random crops
instead (:class:`training.finetune.chips.RandomCropDataset`), which may reach over a held-out block with its labels
blanked: the network never trains on a held-out label (it may see the imagery there, unlabelled, as it does around
a held-out block when predicting it, and as it will in use).

Choice of held-out blocks (deterministic for a seed, so ``--resume`` and a rerun choose the same ones): first one
block per class, rarest class first, for every class found in at least two blocks (a class's only block stays in
training, and the report says that class is not measured); then more blocks until the fraction is reached. Each time,
among the blocks that would do, the one that costs the fewest training chips is taken (ties in a seeded random
order): with a small labelled area this keeps held-out blocks where they remove least training data, e.g. at its
edges, instead of in the middle where one block can cut away most chips.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import ParameterError
from engine.tiling import Window

MIN_HOLDOUT_PIXELS = 1000  # labelled pixels the held-out blocks must hold for a meaningful figure
MIN_TRAIN_PIXELS = 2000  # labelled pixels left for training
MIN_CHIP_LABELLED = 0.01  # a training chip needs this share of labelled pixels (at least 16 pixels)
CHIP_STEP_DIVISOR = 4  # candidate chips every tile / 4 pixels
MIN_BLOCK = 64  # smallest hold-out block side, pixels

ReadLabels = Callable[[Window], np.ndarray]  # window (on the label grid) → (h, w) uint8 class ids, 255 unlabelled


@dataclass(frozen=True)
class Split:
    """Blocks of one raster: ``blocks[i]`` with per-class labelled pixel ``counts[i]``; ``holdout[i]`` held out."""

    blocks: list[Window]
    counts: np.ndarray  # (n, K) int64
    holdout: np.ndarray  # (n,) bool

    @property
    def holdout_blocks(self) -> list[Window]:
        """The held-out blocks."""
        return [b for b, h in zip(self.blocks, self.holdout, strict=True) if h]


def block_size(tile: int) -> int:
    """Side of the hold-out blocks for ``tile``-sized chips: half a tile (at least :data:`MIN_BLOCK`)."""
    return max(MIN_BLOCK, tile // 2)


def chip_sizes(tile: int) -> list[int]:
    """Training chip sides to try, largest first: the tile, then halves down to :data:`MIN_BLOCK`."""
    sizes = [tile]
    while sizes[-1] // 2 >= MIN_BLOCK and sizes[-1] % 64 == 0:
        sizes.append(sizes[-1] // 2)
    return sizes


def block_windows(extent: Window, block: int) -> list[Window]:
    """Blocks of a grid anchored at pixel (0, 0) that intersect ``extent``, clipped to it."""
    out = []
    for r in range(extent.row // block * block, extent.row_end, block):
        for c in range(extent.col // block * block, extent.col_end, block):
            w = Window(r, c, block, block).intersection(extent)
            if w is not None:
                out.append(w)
    return out


def count_blocks(blocks: list[Window], read: ReadLabels, num_classes: int) -> np.ndarray:
    """``(n, K)`` labelled pixels per block and class."""
    counts = np.zeros((len(blocks), num_classes), np.int64)
    for i, b in enumerate(blocks):
        lab = read(b)
        counts[i] = np.bincount(lab[lab < num_classes].ravel(), minlength=num_classes)[:num_classes]
    return counts


def choose_holdout(
    counts: np.ndarray, fraction: float, seed: int, chips_of: list[set[int]] | None = None
) -> np.ndarray:
    """Held-out mask over blocks (see the module docstring); blocks without labels are never held out.

    Args:
        counts: ``(n, K)`` labelled pixels per block and class.
        fraction: share of the labelled blocks to hold out (at least one, never all).
        seed: seeds the random order that breaks ties.
        chips_of: per block, the candidate training chips it overlaps; among the blocks that would do, the one
            whose loss removes the fewest chips still left is taken, so training keeps as much data as possible.
    """
    labelled = np.flatnonzero(counts.sum(axis=1) > 0)
    holdout = np.zeros(len(counts), bool)
    if len(labelled) < 2 or fraction <= 0:
        return holdout
    target = min(max(1, round(fraction * len(labelled))), len(labelled) - 1)
    order = [int(i) for i in labelled[np.random.default_rng(seed).permutation(len(labelled))]]
    lost: set[int] = set()

    def take(candidates: list[int]) -> None:
        if candidates:
            best = min(candidates, key=lambda i: len(chips_of[i] - lost) if chips_of else 0)  # first of ties
            holdout[best] = True
            lost.update(chips_of[best] if chips_of else ())

    present = counts[labelled] > 0  # (n_labelled, K)
    blocks_per_class = present.sum(axis=0)
    for k in np.argsort(blocks_per_class, kind="stable"):
        if holdout.sum() >= target or blocks_per_class[k] < 2:
            continue
        if any(holdout[i] and counts[i, k] > 0 for i in labelled):
            continue
        take([i for i in order if not holdout[i] and counts[i, k] > 0 and _keeps_training(counts, holdout, i)])
    while holdout.sum() < target:
        candidates = [i for i in order if not holdout[i] and _keeps_training(counts, holdout, i)]
        if not candidates:
            break
        take(candidates)
    return holdout


def _keeps_training(counts: np.ndarray, holdout: np.ndarray, i: int) -> bool:
    """Whether holding out block ``i`` too leaves training pixels for every class that has any now."""
    train = counts[~holdout].sum(axis=0)
    return bool(np.all((train - counts[i] > 0) | (train == 0)))


def check_sizes(splits: list[Split], gsd_m: float | None, fraction: float, block: int) -> None:
    """Refuse a hold-out too small to measure, saying how much more to digitise.

    Raises:
        ParameterError: the held-out or training blocks hold too few labelled pixels.
    """
    held = sum(int(s.counts[s.holdout].sum()) for s in splits)
    train = sum(int(s.counts[~s.holdout].sum()) for s in splits)
    blocks = sum(int((s.counts.sum(axis=1) > 0).sum()) for s in splits)
    if held >= MIN_HOLDOUT_PIXELS and train >= MIN_TRAIN_PIXELS:
        return
    total = held + train
    wanted_blocks = max(2, math.ceil(1 / fraction)) if fraction > 0 else 2
    need = max(MIN_HOLDOUT_PIXELS + MIN_TRAIN_PIXELS - total, MIN_HOLDOUT_PIXELS - held, MIN_TRAIN_PIXELS - train, 1)
    area = f" (about {need * gsd_m * gsd_m:.4g} m² at {gsd_m:.3g} m/px)" if gsd_m else ""
    side = f"{block * gsd_m:.4g} m" if gsd_m else f"{block} px"
    raise ParameterError(
        f"too few labelled pixels for a spatial hold-out: {total} labelled pixels in {blocks} block(s) of "
        f"{block}×{block} px ({held} held out, {train} for training)",
        f"digitise at least {need} more labelled pixels{area}, spread over at least {wanted_blocks} areas "
        f"{side} apart, so that {fraction:.0%} of the blocks can be held out",
    )


def candidate_chips(extent: Window, tile: int, read: ReadLabels, bounds: Window) -> list[Window]:
    """``tile``-sized windows over ``extent`` (clipped to ``bounds``) that hold enough labels to train on.

    Candidates start at ``extent``'s corner every ``tile / 4`` pixels; the last row and column are shifted back so
    the extent's far edges are covered too.
    """
    step = max(1, tile // CHIP_STEP_DIVISOR)

    def starts(lo: int, length: int, limit: int) -> list[int]:
        last = max(lo, min(lo + length, limit) - tile)
        s = list(range(lo, last + 1, step))
        if s[-1] != last:
            s.append(last)
        return s

    chips = []
    for r in starts(extent.row, extent.height, bounds.row_end):
        for c in starts(extent.col, extent.width, bounds.col_end):
            w = Window(r, c, tile, tile).intersection(bounds)
            if w is None:
                continue
            lab = read(w)
            if (lab != 255).sum() >= max(16, MIN_CHIP_LABELLED * w.height * w.width):
                chips.append(w)
    return chips


def chips_per_block(blocks: list[Window], chips: list[Window]) -> list[set[int]]:
    """For each block, the indices of the chips that overlap it."""
    return [{j for j, c in enumerate(chips) if c.intersects(b)} for b in blocks]


def training_chips(chips: list[Window], holdout: list[Window]) -> list[Window]:
    """The chips that overlap no held-out block."""
    return [c for c in chips if not any(c.intersects(h) for h in holdout)]
