"""The seed's training augmentation (mmseg 0.21 pipeline semantics) on numpy arrays, with torch and scikit-image.

Pipeline (``TrainPipeline``), for an RGB-ordered ``uint8`` image (H, W, 3) and a ``uint8`` label (H, W):

1. ``Resize`` keep-ratio: with ``ratio_range`` a factor r ~ U[low, high) scales the target square to
   ``int(scale * r)``; the image is rescaled by ``min(long_target / long_side, short_target / short_side)``, new size
   ``int(side * factor + 0.5)``. Image bilinear (half-pixel centres, no antialiasing: the OpenCV INTER_LINEAR
   convention), label nearest.
2. ``RandomCrop(crop_size, cat_max_ratio)``: up to 10 draws while the most frequent label (255 not counted, as in
   mmseg where RandomCrop's ignore index is the default 255) covers ``>= cat_max_ratio`` of the crop.
3. Horizontal flip with probability ``flip_prob``.
4. ``PhotoMetricDistortion`` with mmseg's defaults: brightness ±32, contrast ×[0.5, 1.5], saturation ×[0.5, 1.5],
   hue ±18 (OpenCV's 0..180 hue units = ±36 degrees), each applied with p = 0.5; contrast before or after the HSV
   steps at random. Each step saturates to uint8, as mmseg does. HSV conversion by scikit-image (not bit-identical
   to OpenCV's uint8 HSV; the distribution of the augmentation is the same).
5. Normalise ``(x - mean) / std`` (float32, channel order of the file: mmseg's BGR load + ``to_rgb`` = file order).
6. Pad bottom/right to ``crop_size`` with 0 (after normalising) and ``seg_pad_val`` for the label.

Randomness comes from one ``numpy.random.Generator`` per sample (seeded by the trainer from the global sample
position), so a resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hsv2rgb, rgb2hsv

CROP_RETRIES = 10
RANDOM_CROP_IGNORE = 255  # mmseg RandomCrop's default ignore_index (clutter=5 counts as a class there)
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # OpenCV hue units (degrees / 2)
OPENCV_HUE_RANGE = 180


def rescale_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio output size (h, w) for mmcv ``imrescale`` to fit ``target`` (long, short edge limits)."""
    long_t, short_t = max(target), min(target)
    factor = min(long_t / max(height, width), short_t / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (H, W, C) uint8 or float image to ``size`` = (h, w), same dtype, no antialiasing."""
    if image.shape[:2] == tuple(size):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # (1, C, H, W)
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(image.dtype)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) label map to ``size`` = (h, w)."""
    if label.shape == tuple(size):
        return label
    t = torch.from_numpy(np.ascontiguousarray(label))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy().astype(label.dtype)


def random_crop_box(
    label: np.ndarray, crop: int, cat_max_ratio: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of a random ``crop`` window, redrawn while one class dominates (mmseg RandomCrop)."""
    h, w = label.shape

    def draw() -> tuple[int, int, int, int]:
        oy = int(rng.integers(0, max(h - crop, 0) + 1))
        ox = int(rng.integers(0, max(w - crop, 0) + 1))
        return oy, min(oy + crop, h), ox, min(ox + crop, w)

    box = draw()
    if cat_max_ratio < 1.0:
        for _ in range(CROP_RETRIES):
            values, counts = np.unique(label[box[0] : box[1], box[2] : box[3]], return_counts=True)
            counts = counts[values != RANDOM_CROP_IGNORE]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = draw()
    return box


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` with default parameters on a (H, W, 3) uint8 RGB image."""

    def coin() -> bool:
        return bool(rng.integers(2))

    def contrast(img: np.ndarray) -> np.ndarray:
        return _convert(img, alpha=float(rng.uniform(*CONTRAST_RANGE))) if coin() else img

    img = image
    if coin():
        img = _convert(img, beta=float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)))
    mode = int(rng.integers(2))
    if mode == 1:
        img = contrast(img)
    if coin():  # saturation
        hsv = rgb2hsv(img)
        hsv[..., 1] = _convert(hsv[..., 1] * 255.0, alpha=float(rng.uniform(*SATURATION_RANGE))) / 255.0
        img = np.clip(np.rint(hsv2rgb(hsv) * 255.0), 0, 255).astype(np.uint8)
    if coin():  # hue
        hsv = rgb2hsv(img)
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA))  # numpy randint semantics: high exclusive, as mmseg
        hsv[..., 0] = (hsv[..., 0] + shift / OPENCV_HUE_RANGE) % 1.0
        img = np.clip(np.rint(hsv2rgb(hsv) * 255.0), 0, 255).astype(np.uint8)
    if mode == 0:
        img = contrast(img)
    return img


def normalize(image: np.ndarray, mean: typing.Sequence[float], std: typing.Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 → float32 ``(x - mean) / std``."""
    return (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def pad_to(image: np.ndarray, label: np.ndarray, size: int, seg_pad_val: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to at least ``size`` × ``size``: image with 0, label with ``seg_pad_val``."""
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=seg_pad_val)
    return image, label


@dataclass(frozen=True)
class TrainPipeline:
    """The seed's training pipeline; see the module docstring. ``ratio_range=None`` means single scale."""

    crop_size: int
    resize_scale: int
    ratio_range: tuple[float, float] | None
    cat_max_ratio: float
    flip_prob: float
    photometric: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    seg_pad_val: int

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Returns a float32 (crop, crop, 3) normalised image and a uint8 (crop, crop) label."""
        scale = self.resize_scale
        if self.ratio_range is not None:
            low, high = self.ratio_range
            scale = int(self.resize_scale * float(rng.random() * (high - low) + low))
        size = rescale_size(label.shape[0], label.shape[1], (scale, scale))
        image, label = resize_image(image, size), resize_label(label, size)
        y1, y2, x1, x2 = random_crop_box(label, self.crop_size, self.cat_max_ratio, rng)
        image, label = image[y1:y2, x1:x2], label[y1:y2, x1:x2]
        if rng.random() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        image = np.ascontiguousarray(image)
        if self.photometric:
            image = photometric_distortion(image, rng)
        norm = normalize(image, self.mean, self.std)
        norm, label = pad_to(norm, np.ascontiguousarray(label), self.crop_size, self.seg_pad_val)
        return norm, label
