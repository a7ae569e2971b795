"""The CLI stream and exit codes, polygon output on a hand-checkable raster, and the 2-process distributed run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine.model_file import read_model_info
from engine.raster_io import open_raster
from engine.vectorize import LAYER_NAME, polygonize
from tests.engine.conftest import NUM_CLASSES, potsdam_pixels, read

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def engine_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)  # fmt: skip


def test_cli_events_exit_codes_and_refusal(model_path, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(100, 90))
    out, gpkg = str(tmp_path / "out.tif"), str(tmp_path / "out.gpkg")
    proc = engine_cli("predict", "--model", model_path, "--input", raster, "--output", out, "--vector", gpkg,
                      "--tile", "64", "--stride", "32", "--batch-size", "2", "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["total"] == 6  # 3 rows × 2 columns of 64-px windows, stride 32
    assert events[-1]["event"] == "done" and events[-2]["event"] == "progress"
    assert events[-2]["done"] == events[-2]["total"] == 6
    done = events[-1]
    assert done["outputs"] == {"labels": out, "vector": gpkg}
    counts = np.bincount(read(out).ravel(), minlength=NUM_CLASSES)
    assert [c["pixels"] for c in done["classes"]] == counts.tolist()
    assert [c["area_m2"] for c in done["classes"]] == pytest.approx((counts * 0.25).tolist())  # 0.5 m pixels
    assert {c["name"] for c in done["classes"]} == {"impervious", "building", "vegetation"}
    # existing output without --overwrite: exit 1, one error event with a hint, no traceback, file untouched
    before = os.path.getmtime(out)
    proc = engine_cli("predict", "--model", model_path, "--input", raster, "--output", out)
    assert proc.returncode == 1
    (event,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert event["event"] == "error" and "--overwrite" in event["message"] and event["hint"]
    assert "Traceback" not in proc.stderr and os.path.getmtime(out) == before
    # unreadable input: exit 1 with an error event
    proc = engine_cli("predict", "--model", model_path, "--input", str(tmp_path / "nope.tif"), "--output",
                      str(tmp_path / "x.tif"))  # fmt: skip
    assert proc.returncode == 1 and json.loads(proc.stdout)["kind"] == "RasterReadError"


def test_polygons_hand_checkable(model_path, tmp_path) -> None:
    # 10 × 8 raster of 2 m pixels (EPSG:32633): class 1 block of 4 × 3 px (48 m²), a single class-2 pixel (4 m²)
    # inside class 0, one nodata pixel; the rest class 0 (80 - 12 - 1 - 1 = 66 px = 264 m², with a 1-px hole).
    labels = np.zeros((8, 10), np.uint8)
    labels[1:4, 2:6] = 1
    labels[6, 8] = 2
    labels[7, 0] = 255
    path = str(tmp_path / "labels.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 10, 8, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((400000.0, 2.0, 0.0, 5000000.0, 0.0, -2.0))
    ds.SetProjection(open_raster(_utm_raster(tmp_path)).GetProjection())
    ds.GetRasterBand(1).WriteArray(labels)
    ds.GetRasterBand(1).SetNoDataValue(255)
    ds = None
    info = read_model_info(model_path)
    src = open_raster(path)
    gpkg = str(tmp_path / "p.gpkg")
    assert polygonize(path, gpkg, info, src, 4.0) == 3
    vec = ogr.Open(gpkg)  # keep the data source alive while its layer is read
    feats = sorted((f.GetField("class_id"), f.GetField("class_name"), f.GetField("area_m2"))
                   for f in vec.GetLayerByName(LAYER_NAME))  # fmt: skip
    assert feats == [(0, "impervious", pytest.approx(264.0)), (1, "building", pytest.approx(48.0)),
                     (2, "vegetation", pytest.approx(4.0))]  # fmt: skip
    # min-area 10 m²: the 4 m² pixel is merged into its neighbour (class 0 grows to 268 m², no hole left)
    gpkg2 = str(tmp_path / "p2.gpkg")
    assert polygonize(path, gpkg2, info, src, 4.0, min_area=10.0) == 2
    vec = ogr.Open(gpkg2)
    feats = sorted((f.GetField("class_id"), f.GetField("area_m2")) for f in vec.GetLayer(0))
    assert feats == [(0, pytest.approx(268.0)), (1, pytest.approx(48.0))]


def _utm_raster(tmp_path) -> str:
    path = str(tmp_path / "srs.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 1, 1, 1, gdal.GDT_Byte)
    ds.SetProjection('PROJCS["x",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
                     'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
                     'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],'
                     'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]')  # fmt: skip
    ds = None
    return path


def test_distributed_equals_single(model_path, make_raster, tmp_path) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to the interpreter")
    raster = make_raster("in.tif", potsdam_pixels(180, 120))
    single, multi, conf = str(tmp_path / "single.tif"), str(tmp_path / "multi.tif"), str(tmp_path / "c.tif")
    assert engine_cli("predict", "--model", model_path, "--input", raster, "--output", single).returncode == 0
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc-per-node", "2", "-m", "engine", "predict", "--model", model_path,
                           "--input", raster, "--output", multi, "--confidence", conf, "--distributed"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "done"
    np.testing.assert_array_equal(read(multi), read(single))
    assert gdal.Open(multi).GetGeoTransform() == gdal.Open(single).GetGeoTransform()
    assert sorted(os.listdir(tmp_path)) == ["c.tif", "in.tif", "multi.tif", "multi.tif.aux.xml", "single.tif",
                                            "single.tif.aux.xml"]  # fmt: skip


def test_sigterm_cancels_cleanly(model_path, make_raster, tmp_path) -> None:
    import signal

    raster = make_raster("in.tif", potsdam_pixels(600, 600))  # 144 windows at batch 1: seconds of work
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1"}
    out = str(tmp_path / "out.tif")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "predict", "--model", model_path, "--input", raster,
                             "--output", out, "--vector", str(tmp_path / "v.gpkg"), "--batch-size", "1",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert json.loads(rest.splitlines()[-1])["event"] == "cancelled"
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]  # no output, no temporary file


def test_cog_and_raster_without_crs(model_path, make_raster, tmp_path) -> None:
    from engine.predict import PredictRequest, predict

    raster = make_raster("nocrs.tif", potsdam_pixels(300, 280), epsg=None)
    out = str(tmp_path / "cog.tif")
    result = predict(PredictRequest(model=model_path, input=raster, output=out, cog=True, threads=2))
    ds = gdal.Open(out)
    assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
    assert ds.GetRasterBand(1).GetOverviewCount() >= 1
    assert ds.GetRasterBand(1).GetColorTable() is not None and not ds.GetProjection()
    assert all(c["area_m2"] is None for c in result.classes) and sum(c["pixels"] for c in result.classes) == 84000
    assert sorted(os.listdir(tmp_path)) == ["cog.tif", "cog.tif.aux.xml", "nocrs.tif"]
