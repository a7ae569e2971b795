"""Fixtures for the reliability suite: a small real model file and GeoTIFF builders; a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.engine.conftest import write_geotiff

ROOT = Path(__file__).resolve().parents[2]
POTSDAM_RGB = ROOT / "tests" / "data" / "potsdam" / "2_10_0_0_512_512_rgb.png"
TILE, STRIDE = 64, 48
CLASS_NAMES = ("impervious", "building", "vegetation")


def write_model(path: Path, num_classes: int = 3, **overrides) -> Path:  # type: ignore[no-untyped-def]
    import torch

    from engine.model_file import ModelInfo, save_model_file
    from engine.models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("lite_resnet", num_classes, aux_head=False)
    fields = dict(
        arch="lite_resnet",
        num_classes=num_classes,
        class_names=CLASS_NAMES[:num_classes] + tuple(f"c{i}" for i in range(3, num_classes)),
        colors=((255, 255, 255), (0, 0, 255), (0, 255, 0))[:num_classes] + ((9, 9, 9),) * max(0, num_classes - 3),
        tile_size=TILE,
        stride=STRIDE,
        gsd_m=None,
    )
    fields.update(overrides)
    save_model_file(path, model.state_dict(), ModelInfo(**fields))
    return path


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "lite.rspmodel")


def real_pixels(height: int, width: int) -> np.ndarray:
    rgb = np.asarray(Image.open(POTSDAM_RGB).convert("RGB")).transpose(2, 0, 1)
    return np.ascontiguousarray(rgb[:, :height, :width])


def write_raster(
    path: Path,
    data: np.ndarray,
    epsg: int | None = 32633,
    nodata: float | None = None,
    gdal_type: int | None = None,
) -> Path:
    """GeoTIFF from ``data`` (C, H, W) at 0.5 m in ``epsg`` (None: no CRS), untiled, no colour interpretation."""
    write_geotiff(str(path), data, epsg, nodata=nodata, interp=False, dtype=gdal_type, options=())
    return path


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "in.tif", real_pixels(100, 120))


@dataclass
class CliResult:
    returncode: int
    events: list[dict]
    stderr: str

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "error"]


def run_engine(args: list[str], timeout: float = 300, **kwargs) -> CliResult:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env, timeout=timeout, **kwargs
    )
    events = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    return CliResult(proc.returncode, events, proc.stderr)


RunEngine = Callable[..., CliResult]
