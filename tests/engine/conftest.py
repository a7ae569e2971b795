"""Fixtures for the engine tests: a real model file (lite arch, seeded weights) and real GeoTIFFs made with GDAL."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from osgeo import gdal, osr
from PIL import Image

gdal.UseExceptions()

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
POTSDAM_RGB = os.path.join(DATA, "potsdam", "2_10_0_0_512_512_rgb.png")
TILE, STRIDE = 64, 48
NUM_CLASSES = 3
CLASS_NAMES = ("impervious", "building", "vegetation")
COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 0))
LOGIT_GAIN = 30.0  # random init gives near-uniform logits; scale the classifier so labels vary across the image


def make_model_file(path: str, gsd_m: float | None = None, bands: tuple[str, ...] = ("red", "green", "blue"),
                    value_range: tuple[float, float] = (0.0, 255.0)) -> str:  # fmt: skip
    import torch

    from engine.model_file import ModelInfo, save_model_file
    from engine.models import build_segmentor

    unit = (value_range[1] - value_range[0]) / 255.0  # mean/std are in value_range units
    torch.manual_seed(0)
    model = build_segmentor("lite_resnet", NUM_CLASSES, aux_head=False)
    with torch.no_grad():
        # Random init gives logits dominated by one class everywhere. Re-centre the classifier on a real image so
        # that each class wins somewhere, then sharpen: labels then vary across the image like a real model's.
        model.eval()
        x = (torch.from_numpy(potsdam_pixels(128, 128)).float() - 120.0) / 58.0
        mean_logits = model(x[None]).mean(dim=(0, 2, 3))  # (K,)
        head = model.decode_head.conv_seg
        head.bias.sub_(mean_logits)
        head.weight.mul_(LOGIT_GAIN)
        head.bias.mul_(LOGIT_GAIN)
    info = ModelInfo(
        arch="lite_resnet", num_classes=NUM_CLASSES, class_names=CLASS_NAMES, colors=COLORS, bands=bands,
        mean=tuple(m * unit for m in (123.675, 116.28, 103.53)[: len(bands)]),
        std=tuple(s * unit for s in (58.395, 57.12, 57.375)[: len(bands)]),
        value_range=value_range, gsd_m=gsd_m, tile_size=TILE, stride=STRIDE,
    )  # fmt: skip
    save_model_file(path, model.state_dict(), info)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_model_file(str(tmp_path_factory.mktemp("model") / "lite.rspmodel"))


def potsdam_pixels(height: int, width: int) -> np.ndarray:
    """``(3, height, width)`` uint8 real Potsdam pixels (top-left crop, tiled by mirroring if larger)."""
    rgb = np.asarray(Image.open(POTSDAM_RGB).convert("RGB")).transpose(2, 0, 1)
    reps = (1, -(-height // rgb.shape[1]), -(-width // rgb.shape[2]))
    return np.tile(rgb, reps)[:, :height, :width].copy()


RasterFactory = Callable[..., str]


def write_geotiff(
    path: str,
    data: np.ndarray,
    epsg: int | None = 32633,
    origin: tuple[float, float] = (500000.0, 5800000.0),
    pixel: tuple[float, float] = (0.5, 0.5),
    nodata: float | None = None,
    alpha: np.ndarray | None = None,
    interp: bool = True,
    dtype: int | None = None,
    options: tuple[str, ...] = ("TILED=YES",),
) -> str:
    """GeoTIFF from ``data`` (C, H, W); RGB colour interpretation for 3 bands when ``interp``; optional alpha band."""
    dtype = dtype if dtype is not None else gdal_array_type(data.dtype)
    nb = data.shape[0] + (alpha is not None)
    ds = gdal.GetDriverByName("GTiff").Create(path, data.shape[2], data.shape[1], nb, dtype, list(options))
    ds.SetGeoTransform((origin[0], pixel[0], 0.0, origin[1], 0.0, -pixel[1]))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if interp and data.shape[0] == 3:
            band.SetColorInterpretation((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)[i])
    if alpha is not None:
        band = ds.GetRasterBand(nb)
        band.WriteArray(alpha)
        band.SetColorInterpretation(gdal.GCI_AlphaBand)
    band = ds = None
    return path


@pytest.fixture
def make_raster(tmp_path) -> RasterFactory:
    """Write a GeoTIFF: ``make_raster(name, data (C,H,W), epsg=32633, origin=(x, y), pixel=(sx, sy), nodata=None)``."""

    def make(name: str, data: np.ndarray, epsg: int | None = 32633, origin: tuple[float, float] = (500000.0, 5800000.0),
             pixel: tuple[float, float] = (0.5, 0.5), nodata: float | None = None, alpha: np.ndarray | None = None,
             interp: bool = True) -> str:  # fmt: skip
        return write_geotiff(str(tmp_path / name), data, epsg, origin, pixel, nodata, alpha, interp)

    return make


def gdal_array_type(dtype: np.dtype) -> int:
    return {np.dtype("uint8"): gdal.GDT_Byte, np.dtype("uint16"): gdal.GDT_UInt16,
            np.dtype("float32"): gdal.GDT_Float32}[np.dtype(dtype)]  # fmt: skip


def read(path: str, band: int = 1) -> np.ndarray:
    ds = gdal.Open(path)
    return ds.GetRasterBand(band).ReadAsArray()


@pytest.fixture(autouse=True)
def compile_measurements_in_tmp(tmp_path_factory, monkeypatch) -> None:
    """Engine tests record compile measurements (and compile) under the session's tmp folder, never in ~/.cache."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))
