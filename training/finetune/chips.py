"""Training chips read window by window from the rasters, with the training package's augmentations.

A :class:`RasterSource` is one training raster as the network reads it: the work grid (the raster itself, or a
GDAL warped VRT at the chosen GSD, saved in the work folder), the mapped bands, the linear map of raster values onto
the start model's value range, and the label raster (class ids on the work grid over the labels' extent, 255 where
unlabelled). Nothing holds a whole raster in memory; GDAL datasets are opened lazily in the process that reads (so a
data-loader worker can open its own).

What the recipes train on: :class:`RandomCropDataset`, square crops drawn at random anywhere in the labelled area
(class-balanced, held-out labels blanked), mildly rescaled, flipped and rotated. :class:`ChipDataset` (fixed chips
with :class:`training.transforms.TrainPipeline`: random rescale 0.5-2×, random crop, flip, mmseg's photometric
distortion) is the seed's way, kept for ``Recipe(random_crops=False)`` and the speed benchmark.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
import torch
from osgeo import gdal

from engine import raster_io
from engine.tiling import Window
from training.finetune.classes import IGNORE
from training.transforms import TrainPipeline


@dataclass
class RasterSource:
    """One training raster (see the module docstring); paths only, so it pickles."""

    path: str  # what the network reads: the raster or its warped VRT
    bands: list[int]
    raster_range: tuple[float, float]
    value_range: tuple[float, float]
    label_path: str  # class ids on the work grid over ``label_extent``
    label_extent: Window
    width: int
    height: int
    _ds: typing.Any = None
    _labels: typing.Any = None

    def __getstate__(self) -> dict[str, typing.Any]:
        return {**self.__dict__, "_ds": None, "_labels": None}

    @property
    def bounds(self) -> Window:
        """The whole work grid."""
        return Window(0, 0, self.height, self.width)

    def dataset(self) -> gdal.Dataset:
        """The work-grid dataset, opened on first use in this process."""
        if self._ds is None:
            self._ds = gdal.Open(self.path)
        return self._ds

    def read_labels(self, win: Window) -> np.ndarray:
        """``(h, w)`` uint8 class ids of ``win`` (work grid); :data:`IGNORE` outside the labels' extent."""
        out = np.full((win.height, win.width), IGNORE, np.uint8)
        e = self.label_extent
        part = win.intersection(e)
        if part is None:
            return out
        if self._labels is None:
            self._labels = gdal.Open(self.label_path)
        block = self._labels.GetRasterBand(1).ReadAsArray(part.col - e.col, part.row - e.row, part.width, part.height)
        out[part.row - win.row : part.row_end - win.row, part.col - win.col : part.col_end - win.col] = block
        return out

    def read_image(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(h, w, C)`` float32 values in the model's value range, and the ``(h, w)`` valid mask."""
        ds = self.dataset()
        raw = raster_io.read_window(ds, self.bands, win)  # (C, h, w)
        valid = raster_io.read_valid_mask(ds, self.bands, win)
        (rlo, rhi), (mlo, mhi) = self.raster_range, self.value_range
        k = (mhi - mlo) / (rhi - rlo)
        units = (mlo + (raw.astype(np.float32) - rlo) * k).transpose(1, 2, 0)
        return np.ascontiguousarray(units, np.float32), valid


class ChipDataset(torch.utils.data.Dataset):
    """``dataset[(index, seed)]`` → ``(image (C, T, T) float32, label (T, T) int64)`` for chip ``index``.

    Args:
        sources: the training rasters. chips: ``(source index, window on its work grid)``.
        pipeline: the augmentation; its ``mean``/``std`` are in value-range units.
        eight_bit: inputs are 0..255 (rounded to uint8 so the photometric distortion applies as in the seed).
    """

    def __init__(
        self, sources: list[RasterSource], chips: list[tuple[int, Window]], pipeline: TrainPipeline, eight_bit: bool
    ) -> None:
        self.sources, self.chips, self.pipeline, self.eight_bit = sources, chips, pipeline, eight_bit

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        source_index, win = self.chips[int(index)]
        src = self.sources[source_index]
        image, valid = src.read_image(win)
        label = src.read_labels(win)
        label[~valid] = IGNORE  # nodata pixels are never trained on
        if self.eight_bit:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        image, label = self.pipeline(image, label, np.random.default_rng(int(seed)))
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(
            label.astype(np.int64)
        )


@dataclass(frozen=True)
class CropPlan:
    """How :class:`RandomCropDataset` draws training crops (see its docstring)."""

    crop: int  # side of the network's training input, pixels
    ratio_range: tuple[float, float] = (1.0, 1.0)  # scale factor r: a (crop / r)² area is read and resized to crop²
    class_power: float = 0.5  # a crop centres on class k with probability ∝ (training pixels of k) ** class_power
    photometric: bool = False  # mmseg's photometric distortion (8-bit inputs only)
    rotate: bool = True  # random vertical flip and 90° rotation on top of the horizontal flip


class RandomCropDataset(torch.utils.data.Dataset):
    """``dataset[(index, seed)]`` → ``(image (C, T, T) float32, label (T, T) int64)``: a crop drawn at random.

    Each sample, from ``numpy.random.default_rng(seed)`` alone (so a run is deterministic and resumes identically):
    a class ``k`` with probability ∝ ``pixels_k ** class_power`` (1 = as often as the labels hold it, 0 = every
    class equally often: the imbalance of a real area is softened, and a rare class is seen in every few steps); a
    training block with probability ∝ its pixels of ``k``; a random pixel of ``k`` in it; a square of side
    ``crop / r`` (``r`` uniform in ``ratio_range``) placed at random so that it holds that pixel, inside the raster.
    The crop may reach anywhere, also over held-out blocks: their labels are blanked (:data:`IGNORE`), so the
    network never trains on a held-out label, though it sees the imagery around them as it will when predicting.
    The crop is resized to ``crop``² (image bilinear, labels nearest), flipped/rotated at random, normalised.

    ``index`` is not used (every sample is a fresh draw); ``len`` is the number of training blocks, which sets how
    often the sampler's epoch turns over, nothing else.
    """

    def __init__(
        self,
        sources: list[RasterSource],
        splits: list[typing.Any],
        plan: CropPlan,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        eight_bit: bool,
    ) -> None:
        self.sources, self.splits, self.plan = sources, splits, plan
        self.mean, self.std, self.eight_bit = mean, std, eight_bit
        # (source, block) of every training block and its (n, K) labelled pixels per class
        self.blocks = [(i, b) for i, s in enumerate(splits) for b, h in zip(s.blocks, s.holdout, strict=True) if not h]
        self.counts = np.concatenate([s.counts[~s.holdout] for s in splits]).astype(np.float64)
        totals = self.counts.sum(axis=0)
        weights = np.where(totals > 0, totals**plan.class_power, 0.0)
        self.class_p = weights / weights.sum()

    def __len__(self) -> int:
        return max(1, len(self.blocks))

    def _labels(self, source: int, win: Window) -> np.ndarray:
        """Labels of ``win`` with held-out blocks blanked."""
        label = self.sources[source].read_labels(win)
        for h in self.splits[source].holdout_blocks:
            part = h.intersection(win)
            if part is not None:
                rows = slice(part.row - win.row, part.row_end - win.row)
                label[rows, part.col - win.col : part.col_end - win.col] = IGNORE
        return label

    def window(self, rng: np.random.Generator) -> tuple[int, Window]:
        """The source index and the window (work grid) of one draw."""
        k = int(rng.choice(len(self.class_p), p=self.class_p))
        col = self.counts[:, k]
        j = int(rng.choice(len(col), p=col / col.sum()))
        i, block = self.blocks[j]
        lab = self.sources[i].read_labels(block)
        rows, cols = np.nonzero(lab == k)
        pick = int(rng.integers(len(rows)))
        y, x = block.row + int(rows[pick]), block.col + int(cols[pick])
        low, high = self.plan.ratio_range
        side = max(8, round(self.plan.crop / float(rng.uniform(low, high))))
        src = self.sources[i]

        def start(centre: int, limit: int) -> int:
            s = centre - int(rng.integers(side))  # the pixel anywhere in the square
            return int(min(max(s, 0), max(limit - side, 0)))

        r0, c0 = start(y, src.height), start(x, src.width)
        return i, Window(r0, c0, min(side, src.height - r0), min(side, src.width - c0))

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from training.transforms import normalize, pad_to, photometric_distortion, resize_image, resize_label

        _, seed = item
        rng = np.random.default_rng(int(seed))
        i, win = self.window(rng)
        image, valid = self.sources[i].read_image(win)
        label = self._labels(i, win)
        label[~valid] = IGNORE
        scale = self.plan.crop / max(win.height, win.width)
        size = (max(1, round(win.height * scale)), max(1, round(win.width * scale)))
        image, label = resize_image(image, size), resize_label(label, size)
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.plan.rotate:
            if rng.random() < 0.5:
                image, label = image[::-1], label[::-1]
            if rng.random() < 0.5:
                image, label = image.transpose(1, 0, 2), label.T
        image, label = np.ascontiguousarray(image), np.ascontiguousarray(label)
        if self.eight_bit:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            if self.plan.photometric:
                image = photometric_distortion(image, rng)
        norm, label = pad_to(normalize(image, self.mean, self.std), label, self.plan.crop, IGNORE)
        return torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))
