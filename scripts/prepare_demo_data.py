"""Cut the bundled Potsdam sample into the demo model's training and held-out splits (``make demo-model``, step 1).

Usage::

    .venv/bin/python scripts/prepare_demo_data.py --out build/demo_data/potsdam

Reads ``resources/samples/potsdam_2_10_rgb.tif`` and ``potsdam_2_10_labels.tif`` (512×512, see
``resources/samples/SOURCES.md``) and writes the layout ``training.datasets.PotsdamDataset`` reads:

- ``img_dir/train/2_10_left.png`` + ``ann_dir/train/2_10_left.png``: columns 0..383 (the left 3/4, 512×384 px);
- ``img_dir/val/2_10_right.png`` + ``ann_dir/val/2_10_right.png``: columns 384..511 (the right 1/4, 512×128 px),
  never seen in training: the demo model's metrics are measured there.

Labels keep the Potsdam ids 0..4 (impervious, building, low vegetation, tree, car); the eroded class boundary
(255 in the sample) becomes 5, the preset's ignore index, like clutter in the seed's Potsdam conversion.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from osgeo import gdal
from PIL import Image

gdal.UseExceptions()

SAMPLE_RGB = os.path.join("resources", "samples", "potsdam_2_10_rgb.tif")
SAMPLE_LABELS = os.path.join("resources", "samples", "potsdam_2_10_labels.tif")
HOLDOUT_FIRST_COLUMN = 384  # columns >= this are held out (the right quarter of the 512-px crop)
SAMPLE_BOUNDARY = 255
IGNORE_INDEX = 5  # demo_lite_potsdam's ignore_index


def read_sample(rgb_path: str = SAMPLE_RGB, labels_path: str = SAMPLE_LABELS) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8 RGB, labels (H, W) uint8 with 255 = boundary)`` of the bundled sample."""
    ds = gdal.Open(rgb_path)
    image = np.dstack([ds.GetRasterBand(b + 1).ReadAsArray() for b in range(3)]).astype(np.uint8)
    ds = gdal.Open(labels_path)  # keep the dataset alive while its band is read
    labels = ds.GetRasterBand(1).ReadAsArray().astype(np.uint8)
    return image, labels


def write_splits(out: str) -> dict[str, tuple[int, int]]:
    """Write the train and val splits under ``out``; returns ``{split: (height, width)}``."""
    image, labels = read_sample()
    labels = np.where(labels == SAMPLE_BOUNDARY, IGNORE_INDEX, labels).astype(np.uint8)
    parts = {
        ("train", "2_10_left"): np.s_[:, :HOLDOUT_FIRST_COLUMN],
        ("val", "2_10_right"): np.s_[:, HOLDOUT_FIRST_COLUMN:],
    }
    sizes = {}
    for (split, name), cols in parts.items():
        for sub, array in (("img_dir", image[cols]), ("ann_dir", labels[cols])):
            folder = os.path.join(out, sub, split)
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(array)).save(os.path.join(folder, name + ".png"))
        sizes[split] = labels[cols].shape
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/demo_data/potsdam")
    args = parser.parse_args()
    sizes = write_splits(args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{s} {h}x{w} px" for s, (h, w) in sizes.items()))


if __name__ == "__main__":
    main()
