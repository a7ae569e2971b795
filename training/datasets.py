"""Patch-folder datasets written by ``training.convert``: ISPRS Potsdam and iSAID.

Layouts (the seed's, RSP_SPEC §3):

- Potsdam: ``<root>/img_dir/<split>/<name>.png`` (3 bands in the ortho's order, IRRG or RGB) and
  ``<root>/ann_dir/<split>/<name>.png`` (uint8 0..5; 5 = clutter and unknown colours, ignored).
- iSAID: ``<root>/<split>/images/<P>.png`` and ``<root>/<split>/labels/<P>_instance_color_RGB.png`` (uint8 0..15,
  255 ignored; the seed keeps the colour-mask file name for the index mask).

Images are read with PIL as (H, W, 3) uint8 in file channel order. Class names and palettes are the dataset classes'
``CLASSES`` / ``PALETTE`` attributes (RSP_SPEC §5); they come from ``engine.classes`` so the engine and training agree.
"""

from __future__ import annotations

import dataclasses
import os
import typing

import numpy as np
import torch
from PIL import Image

from engine import classes
from training.config import TrainConfig
from training.transforms import TrainPipeline


class DatasetLayoutError(FileNotFoundError):
    """A converted dataset folder is missing or incomplete; run the converter (``python -m training convert ...``)."""


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 image in file channel order."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def read_label(path: str) -> np.ndarray:
    """(H, W) uint8 label map."""
    with Image.open(path) as im:
        arr = np.array(im)
    if arr.ndim != 2:
        raise DatasetLayoutError(
            f"label {path} has {arr.shape[2]} channels; expected an index PNG: re-run the converter"
        )
    return arr.astype(np.uint8)


class SegmentationFolder(torch.utils.data.Dataset):
    """Pairs of (image, label) files of one split.

    Args:
        image_dir / label_dir: folders; label name = image stem + ``label_suffix``.
        pipeline: training augmentation, or ``None`` for evaluation (raw arrays are returned).
        max_samples: keep only the first N pairs in sorted order (0 = all).

    Items: with a pipeline, ``dataset[(index, seed)]`` → ``(image (3, H, W) float32 tensor, label (H, W) int64)``,
    augmented with ``numpy.random.default_rng(seed)``; without, ``dataset[index]`` → ``(image (H, W, 3) uint8,
    label (H, W) uint8, name)``.
    """

    CLASSES: tuple[str, ...] = ()
    PALETTE: tuple[tuple[int, int, int], ...] = ()
    IGNORE_INDEX: int = 255
    image_suffix = ".png"
    label_suffix = ".png"

    def __init__(
        self,
        image_dir: str,
        label_dir: str,
        pipeline: TrainPipeline | None = None,
        max_samples: int = 0,
    ) -> None:
        if not os.path.isdir(image_dir) or not os.path.isdir(label_dir):
            raise DatasetLayoutError(
                f"dataset folders not found: {image_dir} and {label_dir}; convert the archives first "
                "(python -m training convert-potsdam / convert-isaid) and point data_root at the output"
            )
        names = sorted(f[: -len(self.image_suffix)] for f in os.listdir(image_dir) if f.endswith(self.image_suffix))
        missing = [n for n in names if not os.path.isfile(os.path.join(label_dir, n + self.label_suffix))]
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} images in {image_dir} have no label in {label_dir} (e.g. {missing[:3]}); "
                "re-run the converter, it resumes where it stopped"
            )
        if not names:
            raise DatasetLayoutError(f"no {self.image_suffix} images in {image_dir}")
        if max_samples:
            names = names[:max_samples]
        self.names = names
        self.image_dir, self.label_dir, self.pipeline = image_dir, label_dir, pipeline

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_root(cls, root: str, split: str, **kw: typing.Any) -> SegmentationFolder:
        """``split`` of a converted data set under ``root``, in the data set's own folder layout."""
        raise NotImplementedError(f"{cls.__name__} has no converted-folder layout; build it from its folders")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Raw sample ``index``: image (H, W, 3) uint8, label (H, W) uint8, name.

        Raises:
            DatasetLayoutError: image and label differ in size.
        """
        name = self.names[index]
        image = read_image(os.path.join(self.image_dir, name + self.image_suffix))
        label = read_label(os.path.join(self.label_dir, name + self.label_suffix))
        if image.shape[:2] != label.shape:
            raise DatasetLayoutError(f"{name}: image {image.shape[:2]} and label {label.shape} differ in size")
        return image, label, name

    def __getitem__(self, item: typing.Any) -> typing.Any:
        if self.pipeline is None:
            return self.load(int(item))
        index, seed = item
        image, label, _ = self.load(int(index))
        image, label = self.pipeline(image, label, np.random.default_rng(int(seed)))
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(
            label.astype(np.int64)
        )


class PotsdamDataset(SegmentationFolder):
    """ISPRS Potsdam patches: 0 impervious, 1 building, 2 low vegetation, 3 tree, 4 car, 5 clutter (ignored)."""

    CLASSES, PALETTE = classes.POTSDAM_CLASSES, classes.POTSDAM_PALETTE
    IGNORE_INDEX = classes.POTSDAM_IGNORE_INDEX

    @classmethod
    def from_root(cls, root: str, split: str, **kw: typing.Any) -> PotsdamDataset:
        """``split`` of a converted Potsdam folder (``img_dir/<split>``, ``ann_dir/<split>``)."""
        return cls(os.path.join(root, "img_dir", split), os.path.join(root, "ann_dir", split), **kw)


class ISAIDDataset(SegmentationFolder):
    """iSAID patches: 16 classes, 0 background; 255 ignored (unknown colours and padding)."""

    CLASSES, PALETTE = classes.ISAID_CLASSES, classes.ISAID_PALETTE
    IGNORE_INDEX = classes.ISAID_IGNORE_INDEX
    label_suffix = "_instance_color_RGB.png"

    @classmethod
    def from_root(cls, root: str, split: str, **kw: typing.Any) -> ISAIDDataset:
        """``split`` of a converted iSAID folder (``<split>/images``, ``<split>/labels``)."""
        return cls(os.path.join(root, split, "images"), os.path.join(root, split, "labels"), **kw)


DATASET_CLASSES: dict[str, type[SegmentationFolder]] = {"potsdam": PotsdamDataset, "isaid": ISAIDDataset}


def train_pipeline(config: TrainConfig) -> TrainPipeline:
    """The training augmentation ``config`` describes."""
    # every field of the pipeline is the config field of the same name
    return TrainPipeline(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainPipeline)})


def build_dataset(config: TrainConfig, split: str, train: bool) -> SegmentationFolder:
    """The dataset of ``split`` under ``config.data_root``, with the training pipeline when ``train``."""
    cls = DATASET_CLASSES[config.dataset]
    if train:
        return cls.from_root(
            config.data_root, split, pipeline=train_pipeline(config), max_samples=config.max_train_samples
        )
    return cls.from_root(config.data_root, split)
