"""ISPRS Potsdam: official archives → 512×512 patches with stride 384 in the seed's layout.

Input: a folder holding the orthos (``3_Ortho_IRRG`` by default, as the paper; ``2_Ortho_RGB`` with
``--ortho rgb``) and ``5_Labels_all`` (full, non-eroded labels), either extracted or as the downloaded ``.zip``
files (read in place through GDAL's /vsizip/). Files are found by name anywhere below that folder:
``top_potsdam_<a>_<b>_IRRG.tif`` / ``..._RGB.tif`` and ``top_potsdam_<a>_<b>_label.tif``.

Output (``<out>/img_dir/{train,val}``, ``<out>/ann_dir/{train,val}``, name ``<a>_<b>_<x1>_<y1>_<x2>_<y2>.png``):
images keep the ortho's band order (IRRG → channels IR, R, G); labels are uint8 with the RSP convention
0 impervious, 1 building, 2 low vegetation, 3 tree, 4 car, 5 clutter. Any other colour (e.g. the black boundary of
the eroded label set, or a stray value) becomes 5, the ignore index, never a real class; the converter reports how
many such pixels each tile had.

Windows: 512² every 384 px, the last window in each direction shifted back to end at the tile border (the paper's
stride; the stock mmseg converter's bug that ignores its stride is not copied): 16 × 16 = 256 patches per 6000² tile.
Split: the stock converter's 24 training and 14 validation tiles (the validation tiles are also the test set).
"""

from __future__ import annotations

import os
import re
import sys
import typing
from dataclasses import dataclass, field

import numpy as np

from training.convert.common import (
    ConversionError,
    colour_to_index,
    list_files,
    raster_size,
    read_raster,
    window_starts,
    write_png,
)
from training.progress import Progress

PATCH_SIZE = 512
STRIDE = 384
IGNORE_INDEX = 5
TRAIN_TILES = [
    "2_10",
    "2_11",
    "2_12",
    "3_10",
    "3_11",
    "3_12",
    "4_10",
    "4_11",
    "4_12",
    "5_10",
    "5_11",
    "5_12",
    "6_10",
    "6_11",
    "6_12",
    "6_7",
    "6_8",
    "6_9",
    "7_10",
    "7_11",
    "7_12",
    "7_7",
    "7_8",
    "7_9",
]
VAL_TILES = [
    "2_13",
    "2_14",
    "3_13",
    "3_14",
    "4_13",
    "4_14",
    "4_15",
    "5_13",
    "5_14",
    "5_15",
    "6_13",
    "6_14",
    "6_15",
    "7_13",
]
# RGB label colour → RSP index (RSP_SPEC §3); clutter (red) is 5 = ignore.
LABEL_COLOURS: dict[tuple[int, int, int], int] = {
    (255, 255, 255): 0,  # impervious surfaces
    (0, 0, 255): 1,  # building
    (0, 255, 255): 2,  # low vegetation
    (0, 255, 0): 3,  # tree
    (255, 255, 0): 4,  # car
    (255, 0, 0): 5,  # clutter / background
}
ORTHO_SUFFIX = {"irrg": "IRRG", "rgb": "RGB"}
ORTHO_FOLDER = {"irrg": "3_Ortho_IRRG", "rgb": "2_Ortho_RGB"}


@dataclass
class PotsdamReport:
    """What a conversion did: patches written/skipped per split and unknown-colour pixels per tile."""

    written: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    skipped: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    unknown_pixels: dict[str, int] = field(default_factory=dict)
    missing_tiles: list[str] = field(default_factory=list)


def find_tiles(source: str, ortho: str) -> tuple[dict[str, str], dict[str, str]]:
    """``({tile_id: ortho path}, {tile_id: label path})`` found under ``source`` (folders or zips)."""
    suffix = ORTHO_SUFFIX[ortho]
    img_re = re.compile(rf"top_potsdam_(\d+)_(\d+)_{suffix}\.tif", re.IGNORECASE)
    lab_re = re.compile(r"top_potsdam_(\d+)_(\d+)_label\.tif", re.IGNORECASE)

    def by_tile(files: dict[str, str], pattern: re.Pattern[str]) -> dict[str, str]:
        out = {}
        for base, path in files.items():
            m = pattern.fullmatch(base)
            if m:
                out[f"{m.group(1)}_{m.group(2)}"] = path
        return out

    return by_tile(list_files(source, img_re), img_re), by_tile(list_files(source, lab_re), lab_re)


def check_layout(source: str, ortho: str, allow_missing: bool) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Find all 38 tiles or raise :class:`ConversionError` naming the missing files (unless ``allow_missing``)."""
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    images, labels = find_tiles(source, ortho)
    wanted = TRAIN_TILES + VAL_TILES
    missing = [f"top_potsdam_{t}_{ORTHO_SUFFIX[ortho]}.tif" for t in wanted if t not in images]
    missing += [f"top_potsdam_{t}_label.tif" for t in wanted if t not in labels]
    usable = [t for t in wanted if t in images and t in labels]
    if missing and (not allow_missing or not usable):
        raise ConversionError(
            f"{len(missing)} Potsdam files missing under {source}: {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
            + f". Put {ORTHO_FOLDER[ortho]}.zip (or its extracted folder) and 5_Labels_all.zip there"
            + ("; pass --allow-missing to convert only the tiles present." if usable else ".")
        )
    return images, labels, [t for t in wanted if t not in usable]


def patch_names(tile: str, height: int, width: int, size: int, stride: int) -> list[tuple[str, int, int]]:
    """``[(name, y1, x1), ...]`` for one tile, name ``<tile>_<x1>_<y1>_<x2>_<y2>``."""
    return [
        (f"{tile}_{x}_{y}_{x + size}_{y + size}", y, x)
        for y in window_starts(height, size, stride)
        for x in window_starts(width, size, stride)
    ]


def convert_potsdam(
    source: str,
    output: str,
    ortho: str = "irrg",
    size: int = PATCH_SIZE,
    stride: int = STRIDE,
    allow_missing: bool = False,
    stream: typing.TextIO | None = None,
) -> PotsdamReport:
    """Convert the Potsdam archives under ``source`` into patch folders under ``output``.

    Resumable: a tile whose patches all exist is not read again; within a tile only missing patches are written
    (each PNG is written under a temporary name and renamed, so an interrupted run leaves no half file).

    Raises:
        ConversionError: files missing (listed), unreadable, or an ortho and its label differ in size.
    """
    if ortho not in ORTHO_SUFFIX:
        raise ConversionError(f"ortho must be one of {sorted(ORTHO_SUFFIX)}, got {ortho!r}")
    images, labels, missing = check_layout(source, ortho, allow_missing)
    report = PotsdamReport(missing_tiles=missing)
    stream = stream if stream is not None else sys.stderr
    if missing:
        stream.write(f"warning: converting without {len(missing)} missing tiles: {' '.join(missing)}\n")
    jobs = []
    for split, tiles in (("train", TRAIN_TILES), ("val", VAL_TILES)):
        for sub in ("img_dir", "ann_dir"):
            os.makedirs(os.path.join(output, sub, split), exist_ok=True)
        for tile in tiles:
            if tile in images and tile in labels:
                h, w = raster_size(images[tile])
                if (h, w) != raster_size(labels[tile]):
                    raise ConversionError(f"tile {tile}: ortho {images[tile]} and label {labels[tile]} differ in size")
                jobs.append((split, tile, patch_names(tile, h, w, size, stride)))
    progress = Progress(sum(len(j[2]) for j in jobs), "potsdam patches", stream=stream)
    done = 0
    for split, tile, patches in jobs:
        img_dir, ann_dir = os.path.join(output, "img_dir", split), os.path.join(output, "ann_dir", split)
        todo = [
            p
            for p in patches
            if not (
                os.path.isfile(os.path.join(img_dir, p[0] + ".png"))
                and os.path.isfile(os.path.join(ann_dir, p[0] + ".png"))
            )
        ]
        report.skipped[split] += len(patches) - len(todo)
        if todo:
            image = read_raster(images[tile])[..., :3]
            colour = read_raster(labels[tile])
            if colour.shape[2] < 3:
                raise ConversionError(
                    f"label {labels[tile]} has {colour.shape[2]} band(s); expected an RGB colour label"
                )
            label = colour_to_index(colour[..., :3], LABEL_COLOURS, IGNORE_INDEX)
            known = np.zeros(label.shape, dtype=bool)
            for rgb in LABEL_COLOURS:
                known |= np.all(colour[..., :3] == np.asarray(rgb, np.uint8), axis=-1)
            report.unknown_pixels[tile] = int((~known).sum())
            for name, y, x in todo:
                write_png(os.path.join(img_dir, name + ".png"), image[y : y + size, x : x + size])
                write_png(os.path.join(ann_dir, name + ".png"), label[y : y + size, x : x + size])
                report.written[split] += 1
        done += len(patches)
        progress.update(done, force=True, tile=tile)
    for tile, n in report.unknown_pixels.items():
        if n:
            stream.write(
                f"warning: tile {tile}: {n} label pixels of unknown colour were set to ignore ({IGNORE_INDEX})\n"
            )
    return report
