"""iSAID: DOTA-v1.0 images + iSAID semantic colour masks → 896×896 patches, stride 512, 16-class index labels.

Input: ``<source>/{train,val}/`` holding, anywhere below (extracted or inside ``.zip`` files), the DOTA images
``P<id>.png`` and the iSAID masks ``P<id>_instance_color_RGB.png`` (test masks are not public; the seed uses val as
test). ``P1527`` and ``P1530`` are skipped, as the seed's ``split_isaid.py`` does.

Output: ``<out>/<split>/images/<name>.png`` and ``<out>/<split>/labels/<name>_instance_color_RGB.png`` (uint8 index
0..15 in mmseg iSAID order, 255 = unknown colour = ignore; the seed keeps the colour file name for the index mask).
Patches: ``<P>_<y1>_<y2>_<x1>_<x2>`` for images larger than 896 in both directions, windows every 512 px with the
last one shifted back to the border; smaller images are copied whole and unpadded under their own name (the seed's
behaviour; mmseg upstream pads instead). Colours are matched exactly (masks are lossless PNG); unknown colours never
become class 0 (the seed's gray converter maps them to 0; we ignore them and report the count).
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

PATCH_SIZE = 896
STRIDE = 512  # 896 - overlap 384
IGNORE_INDEX = 255
SKIPPED_IMAGES = ("P1527", "P1530")
SPLITS = ("train", "val")
MASK_SUFFIX = "_instance_color_RGB.png"
# Official iSAID RGB colour → mmseg class index (RSP_SPEC §3, RGB order).
LABEL_COLOURS: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0,  # background
    (0, 0, 63): 1,  # ship
    (0, 63, 63): 2,  # storage_tank
    (0, 63, 0): 3,  # baseball_diamond
    (0, 63, 127): 4,  # tennis_court
    (0, 63, 191): 5,  # basketball_court
    (0, 63, 255): 6,  # ground_track_field
    (0, 127, 63): 7,  # bridge
    (0, 127, 127): 8,  # large_vehicle
    (0, 0, 127): 9,  # small_vehicle
    (0, 0, 191): 10,  # helicopter
    (0, 0, 255): 11,  # swimming_pool
    (0, 191, 127): 12,  # roundabout
    (0, 127, 191): 13,  # soccer_ball_field
    (0, 127, 255): 14,  # plane
    (0, 100, 155): 15,  # harbor
}
_IMAGE_RE = re.compile(r"P\d+\.png")
_MASK_RE = re.compile(r"P\d+_instance_color_RGB\.png")


@dataclass
class ISAIDReport:
    """Patches written/skipped per split, images copied whole, unknown-colour pixels per image."""

    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    whole_images: list[str] = field(default_factory=list)
    unknown_pixels: dict[str, int] = field(default_factory=dict)


def patch_windows(stem: str, height: int, width: int, size: int, stride: int) -> list[tuple[str, int, int, int, int]]:
    """``[(name, y1, y2, x1, x2)]``; one whole-image entry named ``stem`` unless both sides exceed ``size``."""
    if not (height > size and width > size):
        return [(stem, 0, height, 0, width)]
    return [
        (f"{stem}_{y}_{y + size}_{x}_{x + size}", y, y + size, x, x + size)
        for y in window_starts(height, size, stride)
        for x in window_starts(width, size, stride)
    ]


def check_layout(source: str, splits: typing.Sequence[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """``{split: {stem: (image path, mask path)}}`` or :class:`ConversionError` naming what is missing."""
    problems = []
    pairs: dict[str, dict[str, tuple[str, str]]] = {}
    for split in splits:
        folder = os.path.join(source, split)
        if not os.path.isdir(folder):
            problems.append(f"folder {folder} (DOTA {split} images + iSAID {split} semantic masks)")
            continue
        images = {b[: -len(".png")]: p for b, p in list_files(folder, _IMAGE_RE).items()}
        masks = {b[: -len(MASK_SUFFIX)]: p for b, p in list_files(folder, _MASK_RE).items()}
        for stem in SKIPPED_IMAGES:
            images.pop(stem, None)
            masks.pop(stem, None)
        if not images:
            problems.append(f"DOTA images P*.png under {folder}")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask:
            problems.append(f"{len(no_mask)} masks in {folder}: " + ", ".join(s + MASK_SUFFIX for s in no_mask[:5]))
        if no_image:
            problems.append(f"{len(no_image)} images in {folder}: " + ", ".join(s + ".png" for s in no_image[:5]))
        pairs[split] = {s: (images[s], masks[s]) for s in sorted(images) if s in masks}
    if problems:
        raise ConversionError("iSAID input incomplete; missing: " + "; ".join(problems))
    return pairs


def convert_isaid(
    source: str,
    output: str,
    splits: typing.Sequence[str] = SPLITS,
    size: int = PATCH_SIZE,
    stride: int = STRIDE,
    stream: typing.TextIO | None = None,
) -> ISAIDReport:
    """Convert the iSAID/DOTA files under ``source`` into patch folders under ``output`` (resumable).

    Raises:
        ConversionError: missing folders, images without masks or masks without images (listed), size mismatch.
    """
    pairs = check_layout(source, splits)
    stream = stream if stream is not None else sys.stderr
    report = ISAIDReport()
    total = sum(len(p) for p in pairs.values())
    progress = Progress(total, "isaid images", stream=stream)
    done = 0
    for split, items in pairs.items():
        img_dir, lab_dir = os.path.join(output, split, "images"), os.path.join(output, split, "labels")
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lab_dir, exist_ok=True)
        for stem, (image_path, mask_path) in items.items():
            h, w = raster_size(image_path)
            windows = patch_windows(stem, h, w, size, stride)
            if len(windows) == 1 and windows[0][0] == stem:
                report.whole_images.append(stem)
            todo = [
                win
                for win in windows
                if not (
                    os.path.isfile(os.path.join(img_dir, win[0] + ".png"))
                    and os.path.isfile(os.path.join(lab_dir, win[0] + MASK_SUFFIX))
                )
            ]
            report.skipped[split] += len(windows) - len(todo)
            if todo:
                image = read_raster(image_path)
                if image.shape[2] == 1:
                    image = np.repeat(image, 3, axis=2)  # a few DOTA images are gray
                image = image[..., :3]
                colour = read_raster(mask_path)[..., :3]
                if colour.shape[:2] != (h, w):
                    raise ConversionError(f"{stem}: image {w}x{h} and mask {colour.shape[1]}x{colour.shape[0]} differ")
                label = colour_to_index(colour, LABEL_COLOURS, IGNORE_INDEX)
                report.unknown_pixels[stem] = int((label == IGNORE_INDEX).sum())
                for name, y1, y2, x1, x2 in todo:
                    write_png(os.path.join(img_dir, name + ".png"), image[y1:y2, x1:x2])
                    write_png(os.path.join(lab_dir, name + MASK_SUFFIX), label[y1:y2, x1:x2])
                    report.written[split] += 1
            done += 1
            progress.update(done, force=True, image=stem)
    bad = {k: v for k, v in report.unknown_pixels.items() if v}
    if bad:
        stream.write(f"warning: unknown mask colours set to ignore ({IGNORE_INDEX}) in {len(bad)} images: {bad}\n")
    return report
