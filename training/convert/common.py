"""Shared pieces of the converters: window positions, colour → index mapping, archive listing, atomic PNG writes."""

from __future__ import annotations

import os
import re
import typing

import numpy as np
from PIL import Image


class ConversionError(RuntimeError):
    """The archives are incomplete or unreadable; the message lists what is missing and where it was looked for."""


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` every ``stride`` covering ``0..length``; the last one ends at the border.

    ``range(0, length, stride)`` with every window that would cross the border shifted back to ``length - size``
    (duplicates removed), as iSAID's ``split_isaid.py`` does. A length ``<= size`` gives ``[0]``.
    Example: length 6000, size 512, stride 384 → 0, 384, ..., 5376, 5488 (16 windows).
    """
    if length <= size:
        return [0]
    starts: list[int] = []
    for s in range(0, length, stride):
        s = min(s, length - size)
        if not starts or s != starts[-1]:
            starts.append(s)
        if s == length - size:
            break
    return starts


def colour_to_index(rgb: np.ndarray, table: typing.Mapping[tuple[int, int, int], int], unknown: int) -> np.ndarray:
    """Map an (H, W, 3) uint8 colour image to (H, W) uint8 indices; colours not in ``table`` become ``unknown``."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)
    out = np.full(packed.shape, unknown, dtype=np.uint8)
    for (r, g, b), idx in table.items():
        out[packed == ((r << 16) | (g << 8) | b)] = idx
    return out


def list_files(root: str, pattern: re.Pattern[str]) -> dict[str, str]:
    """Files under ``root`` (recursively, also inside ``*.zip`` archives via GDAL's /vsizip/) whose base name matches.

    Returns ``{basename: readable path}``; a path inside a zip is a ``/vsizip/...`` GDAL path.
    """
    found: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            full = os.path.join(dirpath, f)
            if pattern.fullmatch(f):
                found.setdefault(f, full)
            elif f.lower().endswith(".zip"):
                from osgeo import gdal

                for inner in gdal.ReadDirRecursive(f"/vsizip/{full}") or []:
                    base = inner.rstrip("/").rsplit("/", 1)[-1]
                    if pattern.fullmatch(base):
                        found.setdefault(base, f"/vsizip/{full}/{inner}")
    return found


def raster_size(path: str) -> tuple[int, int]:
    """(height, width) of a raster without reading its pixels."""
    from osgeo import gdal

    ds = gdal.Open(path)
    if ds is None:
        raise ConversionError(f"cannot open {path} with GDAL: the file is missing, corrupt or not a raster")
    return ds.RasterYSize, ds.RasterXSize


def read_raster(path: str) -> np.ndarray:
    """Read a raster (GeoTIFF, PNG, or a /vsizip/ path) as (H, W, bands) uint8 with GDAL."""
    from osgeo import gdal

    ds = gdal.Open(path)
    if ds is None:
        raise ConversionError(f"cannot open {path} with GDAL: the file is corrupt or not a raster")
    arr = ds.ReadAsArray()
    if arr is None:
        raise ConversionError(f"cannot read pixels of {path}")
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.dtype != np.uint8:
        raise ConversionError(f"{path} has data type {arr.dtype}; the converters expect 8-bit images")
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def write_png(path: str, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG atomically (temporary name, then rename)."""
    tmp = f"{path}.part.png"
    Image.fromarray(np.ascontiguousarray(array)).save(tmp)
    os.replace(tmp, path)
