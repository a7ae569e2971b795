"""Training chips read window by window from the rasters, with the training package's augmentations.

A :class:`RasterSource` is one training raster as the network reads it: the work grid (the raster itself, or a
GDAL warped VRT at the chosen GSD, saved in the work folder), the mapped bands, the linear map of raster values onto
the start model's value range, and the label raster (class ids on the work grid over the labels' extent, 255 where
unlabelled). Nothing holds a whole raster in memory; GDAL datasets are opened lazily in the process that reads (so a
data-loader worker can open its own).

Augmentation: :class:`training.transforms.TrainPipeline` (random rescale 0.5-2×, random crop, flip, and mmseg's
photometric distortion when the inputs are 8-bit 0..255), as for the seed recipes.
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
