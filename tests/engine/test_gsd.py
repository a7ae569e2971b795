"""``--gsd model|native|METRES``: the resolution the network reads a raster at, in the API, the CLI and the events."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from osgeo import gdal

from engine.errors import ParameterError
from engine.predict import PredictRequest, predict
from tests.engine.conftest import NUM_CLASSES, make_model_file, potsdam_pixels, read
from tests.engine.test_cli_vector_distributed import engine_cli

gdal.UseExceptions()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same seeded weights with a 1 m GSD and without a GSD."""
    folder = tmp_path_factory.mktemp("gsd_models")
    return {
        "1m": make_model_file(str(folder / "gsd1.rspmodel"), gsd_m=1.0),
        "none": make_model_file(str(folder / "nogsd.rspmodel"), gsd_m=None),
    }


def run(model: str, raster: str, out: str, **kw) -> tuple[np.ndarray, dict]:
    events: list[dict] = []
    predict(PredictRequest(model=model, input=raster, output=out, threads=2, **kw), on_event=events.append)
    return read(out), events[0]


def test_gsd_native_reads_the_raster_at_its_own_resolution(models, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(128, 128), pixel=(0.5, 0.5))
    default, start_model = run(models["1m"], raster, str(tmp_path / "model.tif"))
    native, start = run(models["1m"], raster, str(tmp_path / "native.tif"), gsd="native")
    plain, _ = run(models["none"], raster, str(tmp_path / "plain.tif"))
    np.testing.assert_array_equal(native, plain)  # the 1 m model read at 0.5 m = a model without GSD
    assert (native != default).mean() > 0.05  # and differs from the default run at the model's 1 m
    assert start["resampled"] is False and start["gsd_choice"] == "native"
    assert start["gsd_m"] == start["native_gsd_m"] == [0.5, 0.5] and start["resampling_factor"] == [1.0, 1.0]
    assert start_model["resampled"] is True and start_model["gsd_choice"] == "model"
    assert start_model["gsd_m"] == [1.0, 1.0] and start_model["resampling_factor"] == [2.0, 2.0]


def test_gsd_metres_equals_resampling_by_hand(models, make_raster, tmp_path) -> None:
    fine = make_raster("fine.tif", potsdam_pixels(128, 128), pixel=(0.15, 0.15))
    out = str(tmp_path / "out.tif")
    labels, start = run(models["1m"], fine, out, gsd=0.3)
    assert start["gsd_m"] == [0.3, 0.3] and start["resampling_factor"] == [2.0, 2.0] and start["gsd_choice"] == 0.3
    assert start["work_size"] == [64, 64]
    ds = gdal.Open(out)
    assert (ds.RasterXSize, ds.RasterYSize) == (128, 128)  # written on the source grid
    assert ds.GetGeoTransform() == pytest.approx(gdal.Open(fine).GetGeoTransform())
    coarse = str(tmp_path / "coarse.tif")
    gdal.Warp(coarse, fine, xRes=0.3, yRes=0.3, resampleAlg="average", dstAlpha=True)
    coarse_labels, coarse_start = run(models["1m"], coarse, str(tmp_path / "coarse_out.tif"), bands=(1, 2, 3),
                                      gsd="native")  # fmt: skip
    assert coarse_start["resampled"] is False
    upsampled = np.repeat(np.repeat(coarse_labels, 2, axis=0), 2, axis=1)
    assert labels.max() < NUM_CLASSES and (labels == upsampled).mean() > 0.99
    # the text form of the API gives the same run
    again, _ = run(models["1m"], fine, str(tmp_path / "again.tif"), gsd="0.3")
    np.testing.assert_array_equal(again, labels)


@pytest.mark.parametrize("value", ["fine", "0", "-1", "nan", ""])
def test_bad_gsd_values(value) -> None:
    with pytest.raises(ParameterError, match="--gsd must be model, native or"):
        PredictRequest(model="m.rspmodel", input="in.tif", output="out.tif", gsd=value)


def test_cli_gsd_metres_and_refusals(models, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(64, 64), pixel=(0.25, 0.25))
    out = str(tmp_path / "out.tif")
    proc = engine_cli("predict", "--model", models["1m"], "--input", raster, "--output", out, "--gsd", "0.5",
                      "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    start = json.loads(proc.stdout.splitlines()[0])
    assert start["event"] == "start" and start["gsd_m"] == [0.5, 0.5] and start["resampling_factor"] == [2.0, 2.0]
    # a bad value and a GSD in metres for a raster without CRS: one error line with a hint, nothing written
    no_crs = make_raster("nocrs.tif", potsdam_pixels(64, 64), epsg=None)
    for raster_path, gsd, text in ((raster, "fine", "--gsd must be"), (no_crs, "0.3", "needs a raster with a CRS")):
        bad = str(tmp_path / "bad.tif")
        proc = engine_cli("predict", "--model", models["1m"], "--input", raster_path, "--output", bad, "--gsd", gsd)
        lines = proc.stdout.splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stdout
        error = json.loads(lines[0])
        assert error["event"] == "error" and text in error["message"] and error["hint"]
        assert not os.path.exists(bad)
    assert not [name for name in os.listdir(tmp_path) if "bad" in name or name.startswith(".")]
