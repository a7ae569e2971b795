"""Test support for remote inputs: the local HTTP server process and an XYZ tile pyramid cut from a real raster.

Used by the engine tests and the plugin's real-QGIS test; 127.0.0.1 only, nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from osgeo import gdal

gdal.UseExceptions()

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "http_server.py")
WEB_MERCATOR_HALF = 20037508.342789244  # metres: half the EPSG:3857 world width
TILE = 256


@dataclass(frozen=True)
class Server:
    """A running :mod:`tests.engine.http_server` process."""

    url: str  # http://127.0.0.1:PORT
    root: str
    process: subprocess.Popen

    def stats(self) -> dict:
        """What the server sent so far (requests, bytes, paths)."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as answer:
            return json.loads(answer.read())


@contextlib.contextmanager
def serve(root: str) -> Iterator[Server]:
    """Serve ``root`` over HTTP on 127.0.0.1 in a child process for the duration of the block."""
    process = subprocess.Popen([sys.executable, SERVER, root], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(f"http://127.0.0.1:{port}", root, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def xyz_resolution(zoom: int) -> float:
    """EPSG:3857 metres per pixel of zoom level ``zoom`` (256-px tiles)."""
    return 2 * WEB_MERCATOR_HALF / TILE / 2**zoom


@dataclass(frozen=True)
class Pyramid:
    """An XYZ tile folder ``root/{z}/{x}/{y}.png`` at one zoom and the EPSG:3857 raster the tiles were cut from."""

    root: str
    zoom: int
    tiles: list[tuple[int, int]]  # (x, y) of every tile written
    mosaic: str  # GeoTIFF of the tiles' full extent, on the tile grid (the reference for georeferencing)


def make_xyz_pyramid(source: str, folder: str, zoom: int) -> Pyramid:
    """Cut ``source`` into 256-px RGBA PNG tiles of XYZ level ``zoom`` (GDAL's own warp and PNG drivers).

    The source is warped to EPSG:3857 on the level's pixel grid, extended outwards to whole tiles (transparent where
    the source has no data), then each tile is written as ``folder/zoom/x/y.png``.
    """
    res = xyz_resolution(zoom)
    info = gdal.Warp("", source, format="VRT", dstSRS="EPSG:3857")
    gt = info.GetGeoTransform()
    xmin, ymax = gt[0], gt[3]
    xmax, ymin = xmin + gt[1] * info.RasterXSize, ymax + gt[5] * info.RasterYSize
    span = TILE * res
    x0, x1 = math.floor((xmin + WEB_MERCATOR_HALF) / span), math.ceil((xmax + WEB_MERCATOR_HALF) / span)
    y0, y1 = math.floor((WEB_MERCATOR_HALF - ymax) / span), math.ceil((WEB_MERCATOR_HALF - ymin) / span)
    bounds = (x0 * span - WEB_MERCATOR_HALF, WEB_MERCATOR_HALF - y1 * span,
              x1 * span - WEB_MERCATOR_HALF, WEB_MERCATOR_HALF - y0 * span)  # fmt: skip
    mosaic = os.path.join(folder, f"mosaic_z{zoom}.tif")
    gdal.Warp(mosaic, source, dstSRS="EPSG:3857", outputBounds=bounds, xRes=res, yRes=res, dstAlpha=True,
              resampleAlg="bilinear", targetAlignedPixels=False)  # fmt: skip
    tiles = []
    for tx in range(x0, x1):
        for ty in range(y0, y1):
            path = os.path.join(folder, "tiles", str(zoom), str(tx), f"{ty}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            gdal.Translate(path, mosaic, format="PNG", srcWin=[(tx - x0) * TILE, (ty - y0) * TILE, TILE, TILE])
            if os.path.exists(path + ".aux.xml"):
                os.remove(path + ".aux.xml")
            tiles.append((tx, ty))
    return Pyramid(os.path.join(folder, "tiles"), zoom, tiles, mosaic)
