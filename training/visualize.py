"""Pictures of results with PIL and numpy only (matplotlib is not a dependency).

- :func:`overlay`: class colours blended over the image (mmseg's ``show_result`` look, opacity 0.5); ignored pixels
  keep the image.
- :func:`comparison`: image | prediction overlay | ground-truth overlay side by side, with captions.
- :func:`confusion_matrix_image`: row-normalised confusion matrix (rows = ground truth, columns = prediction) as a
  heat map with class names and percentages.
"""

from __future__ import annotations

import typing

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OVERLAY_OPACITY = 0.5
CAPTION_HEIGHT = 18
CELL = 44  # confusion-matrix cell side, pixels
MARGIN_LEFT = 150
MARGIN_TOP = 30


def colorize(label: np.ndarray, palette: typing.Sequence[typing.Sequence[int]], ignore_index: int | None) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) uint8 colours; ignored/out-of-range ids are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(palette[:256]):
        lut[i] = c
    out = lut[label.astype(np.uint8)]
    if ignore_index is not None:
        out[label == ignore_index] = 0
    return out


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    palette: typing.Sequence[typing.Sequence[int]],
    ignore_index: int | None,
    opacity: float = OVERLAY_OPACITY,
) -> np.ndarray:
    """Blend class colours over a (H, W, 3) uint8 image; pixels equal to ``ignore_index`` are left as they are."""
    colours = colorize(label, palette, ignore_index).astype(np.float32)
    blended = image.astype(np.float32) * (1 - opacity) + colours * opacity
    if ignore_index is not None:
        keep = label == ignore_index
        blended[keep] = image[keep]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def comparison(
    image: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    palette: typing.Sequence[typing.Sequence[int]],
    ignore_index: int | None,
) -> Image.Image:
    """Image | prediction | ground truth, each with a caption strip above."""
    panels = [
        ("image", image),
        ("prediction", overlay(image, prediction, palette, None)),
        ("ground truth", overlay(image, ground_truth, palette, ignore_index)),
    ]
    h, w = image.shape[:2]
    canvas = Image.new("RGB", (3 * w, h + CAPTION_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (caption, panel) in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (i * w, CAPTION_HEIGHT))
        draw.text((i * w + 4, 3), caption, fill="black", font=font)
    return canvas


def confusion_matrix_image(counts: np.ndarray, class_names: typing.Sequence[str]) -> Image.Image:
    """Row-normalised heat map of ``counts[label, prediction]``; empty rows are drawn grey."""
    n = len(class_names)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)
    img = Image.new("RGB", (MARGIN_LEFT + n * CELL + 10, MARGIN_TOP + n * CELL + 30), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i in range(n):
        for j in range(n):
            v = share[i, j]
            x0, y0 = MARGIN_LEFT + j * CELL, MARGIN_TOP + i * CELL
            if np.isnan(v):
                fill: tuple[int, int, int] = (200, 200, 200)
            else:
                shade = int(255 * (1 - v))
                fill = (shade, shade, 255)
            draw.rectangle([x0, y0, x0 + CELL - 1, y0 + CELL - 1], fill=fill, outline=(230, 230, 230))
            if not np.isnan(v):
                draw.text(
                    (x0 + 4, y0 + CELL // 2 - 6), f"{100 * v:.0f}%", fill="black" if v < 0.6 else "white", font=font
                )
    for i, name in enumerate(class_names):  # rows "i name"; columns by class index
        draw.text((4, MARGIN_TOP + i * CELL + CELL // 2 - 6), f"{i} {name[:22]}", fill="black", font=font)
        draw.text((MARGIN_LEFT + i * CELL + CELL // 2 - 6, MARGIN_TOP - 16), str(i), fill="black", font=font)
    draw.text(
        (MARGIN_LEFT, MARGIN_TOP + n * CELL + 8), "rows: ground truth, columns: prediction", fill="black", font=font
    )
    return img
