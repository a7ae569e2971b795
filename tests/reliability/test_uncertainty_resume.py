"""``--uncertainty`` and the polygons' own confidence raster through kill -9 and ``--resume``: identical outputs, and
no hidden file left (the polygons' confidence chunks are written even though ``--confidence`` was not asked for)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from conftest import run_engine
from osgeo import gdal, ogr
from test_resume import first, folder, tall_raster

gdal.UseExceptions()
ogr.UseExceptions()
OUTPUTS = ["classes.tif", "classes.tif.aux.xml", "polygons.gpkg", "uncertainty.tif"]


def args(model: Path, raster: Path, out: Path) -> list[str]:
    return ["predict", "--model", str(model), "--input", str(raster), "--output", str(out / "classes.tif"),
            "--uncertainty", str(out / "uncertainty.tif"), "--vector", str(out / "polygons.gpkg"),
            "--threads", "1", "--compile", "off"]  # fmt: skip


def polygons(path: Path) -> list[tuple[int, float, str]]:
    ds = ogr.Open(str(path))
    rows = sorted((f.GetField("class_id"), f.GetField("confidence"), f.GetGeometryRef().ExportToWkt())
                  for f in ds.GetLayer())  # fmt: skip
    ds = None
    return rows


def test_kill_9_with_uncertainty_and_polygon_confidence_then_resume_is_identical(
    tmp_path: Path, model: Path, monkeypatch
) -> None:
    raster = tall_raster(tmp_path / "in.tif", 700, 160)  # three chunks of 256 rows
    ref = folder(tmp_path, "reference")
    assert run_engine(args(model, raster, ref)).returncode == 0
    out = folder(tmp_path, "out")
    monkeypatch.setenv("RSP_ENGINE_KILL_AT", "journal_write:3")  # created, first chunk listed, killed before the next
    killed = run_engine(args(model, raster, out))
    monkeypatch.delenv("RSP_ENGINE_KILL_AT")
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = os.listdir(out)
    assert not set(OUTPUTS) & set(left)
    assert any("polygon-confidence" in name for name in left)  # its chunks are kept for the resume
    resumed = run_engine([*args(model, raster, out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 256 <= first(resumed, "start")["resumed_from_row"] < 700
    assert sorted(os.listdir(out)) == OUTPUTS  # no chunk, journal, lock or temporary left
    for name in ("classes.tif", "uncertainty.tif"):
        a, b = gdal.Open(str(ref / name)).ReadAsArray(), gdal.Open(str(out / name)).ReadAsArray()
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert polygons(ref / "polygons.gpkg") == polygons(out / "polygons.gpkg")
    assert all(0 < confidence <= 1 for _cid, confidence, _wkt in polygons(out / "polygons.gpkg"))


def test_resume_after_adding_vector_without_confidence_is_refused(tmp_path: Path, model: Path, monkeypatch) -> None:
    """The unfinished run wrote no confidence chunks, which the polygons now need: refused, naming why."""
    raster = tall_raster(tmp_path / "in.tif", 700, 160)
    out = folder(tmp_path, "out")
    plain = ["predict", "--model", str(model), "--input", str(raster), "--output", str(out / "classes.tif"),
             "--threads", "1", "--compile", "off"]  # fmt: skip
    monkeypatch.setenv("RSP_ENGINE_KILL_AT", "journal_write:3")
    assert run_engine(plain).returncode == -9
    monkeypatch.delenv("RSP_ENGINE_KILL_AT")
    refused = run_engine([*plain, "--vector", str(out / "polygons.gpkg"), "--resume"])
    assert refused.returncode == 1
    assert "polygon_confidence" in refused.errors[0]["message"]
