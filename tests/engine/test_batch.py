"""``python -m engine batch``: a folder of 10 real tiles, one model load, summary, failures, resume, mosaic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from engine.batch import BatchInputError, BatchRequest, expand_inputs, run_batch
from engine.errors import EngineError
from engine.predict import PredictRequest, predict
from tests.engine.conftest import DATA, NUM_CLASSES, read
from tests.engine.test_cli_vector_distributed import engine_cli

gdal.UseExceptions()

SWISSIMAGE = os.path.join(DATA, "swissimage", "lausanne_1091-322_00_big.tif")  # 875×600 RGB, EPSG:2056, 0.5 m
TILE_PX, COLS, ROWS = 96, 5, 2  # 10 tiles cut from the top-left 480×192 pixels


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder of 10 real georeferenced GeoTIFF tiles (and a non-raster file that must be ignored)."""
    folder = tmp_path_factory.mktemp("tiles")
    for r in range(ROWS):
        for c in range(COLS):
            gdal.Translate(str(folder / f"tile_{r}_{c}.tif"), SWISSIMAGE,
                           srcWin=[c * TILE_PX, r * TILE_PX, TILE_PX, TILE_PX])  # fmt: skip
    (folder / "README.txt.bak").write_text("not a raster")
    return str(folder)


def request(model: str, out: str, **kw) -> BatchRequest:
    template = PredictRequest(model=model, input="", output=os.path.join(out, "_"), threads=2, compile="off")
    return BatchRequest(template=template, output_dir=out, **kw)


def test_folder_of_ten_tiles_one_load_summary_and_resume(model_path, tiles, tmp_path) -> None:
    out = str(tmp_path / "out")
    events: list[dict] = []
    summary = run_batch(request(model_path, out, inputs=(tiles,), vector=True), on_event=events.append)
    assert summary["counts"] == {"done": 10, "skipped": 0, "failed": 0}
    names = sorted(os.listdir(out))
    assert len([n for n in names if n.endswith("_classes.tif")]) == 10
    assert len([n for n in names if n.endswith("_polygons.gpkg")]) == 10
    assert "batch_summary.json" in names and not [n for n in names if n.startswith(".")]
    on_disk = json.loads(Path(out, "batch_summary.json").read_text())
    assert [e["status"] for e in on_disk["inputs"]] == ["done"] * 10
    # each output equals a single predict() run on that tile, on the tile's own grid
    tile = os.path.join(tiles, "tile_1_3.tif")
    single = str(tmp_path / "single.tif")
    predict(PredictRequest(model=model_path, input=tile, output=single, threads=2, compile="off"))
    batch_out = os.path.join(out, "tile_1_3_classes.tif")
    np.testing.assert_array_equal(read(batch_out), read(single))
    assert gdal.Open(batch_out).GetGeoTransform() == pytest.approx(gdal.Open(tile).GetGeoTransform())
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("item") == 10 and kinds[-1] == "done"
    assert {e["item"] for e in events if e["event"] == "progress"} == set(range(1, 11))
    # rerun: every input is skipped, nothing is recomputed
    mtime = os.path.getmtime(batch_out)
    again = run_batch(request(model_path, out, inputs=(tiles,), vector=True))
    assert again["counts"] == {"done": 0, "skipped": 10, "failed": 0}
    assert os.path.getmtime(batch_out) == mtime
    # a lost output (e.g. an interrupted earlier run) is redone, the rest skipped
    os.remove(os.path.join(out, "tile_0_2_polygons.gpkg"))
    third = run_batch(request(model_path, out, inputs=(tiles,), vector=True))
    assert third["counts"] == {"done": 1, "skipped": 9, "failed": 0}
    assert os.path.exists(os.path.join(out, "tile_0_2_polygons.gpkg"))


def test_failed_input_is_reported_and_skipped(model_path, tiles, tmp_path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    two_band = str(tmp_path / "two_band.tif")
    gdal.Translate(two_band, os.path.join(tiles, "tile_0_0.tif"), bandList=[1, 2])
    names = tmp_path / "list.txt"
    names.write_text(f"# three inputs\n{os.path.join(tiles, 'tile_0_0.tif')}\nbroken.tif\n\ntwo_band.tif\n")
    out = str(tmp_path / "out")
    with pytest.raises(EngineError, match="2 of 3 inputs failed") as info:
        run_batch(request(model_path, out, inputs=(str(names),)))
    assert "batch_summary.json" in info.value.hint
    summary = json.loads(Path(out, "batch_summary.json").read_text())
    status = {os.path.basename(e["input"]): e for e in summary["inputs"]}
    assert status["tile_0_0.tif"]["status"] == "done"
    assert status["broken.tif"]["status"] == "failed" and "GDAL cannot read" in status["broken.tif"]["error"]
    assert status["two_band.tif"]["kind"] == "BandMismatchError" and status["two_band.tif"]["hint"]
    assert sorted(os.listdir(out)) == ["batch_summary.json", "tile_0_0_classes.tif", "tile_0_0_classes.tif.aux.xml"]


def test_mosaic_is_seamless_and_equals_the_whole_area(model_path, tiles, tmp_path) -> None:
    out = str(tmp_path / "out")
    summary = run_batch(request(model_path, out, inputs=(os.path.join(tiles, "*.tif"),), mosaic=True))
    assert summary["counts"]["done"] == 1
    mosaic = os.path.join(out, "mosaic_classes.tif")
    whole_src = str(tmp_path / "whole.tif")
    gdal.Translate(whole_src, SWISSIMAGE, srcWin=[0, 0, COLS * TILE_PX, ROWS * TILE_PX])
    whole = str(tmp_path / "whole_out.tif")
    predict(PredictRequest(model=model_path, input=whole_src, output=whole, threads=2, compile="off"))
    labels = read(mosaic)
    assert labels.shape == (ROWS * TILE_PX, COLS * TILE_PX) and labels.max() < NUM_CLASSES
    np.testing.assert_array_equal(labels, read(whole))  # windows ran across the tile borders
    assert gdal.Open(mosaic).GetGeoTransform() == pytest.approx(gdal.Open(whole_src).GetGeoTransform())
    assert not [n for n in os.listdir(out) if n.endswith(".vrt")]


def test_bad_inputs_one_line_errors_nothing_left(model_path, tiles, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt.bak").write_text("x")
    with pytest.raises(BatchInputError, match="holds no rasters"):
        expand_inputs([str(empty)])
    with pytest.raises(BatchInputError, match="no file matches"):
        expand_inputs([str(tmp_path / "nothing*.tif")])
    gray = str(tmp_path / "gray.tif")
    gdal.Translate(gray, os.path.join(tiles, "tile_0_0.tif"), bandList=[1])
    out = str(tmp_path / "out")
    with pytest.raises(BatchInputError, match=r"differs from .* in band count \(3 bands vs 1\)"):
        run_batch(request(model_path, out, inputs=(os.path.join(tiles, "tile_0_0.tif"), gray), mosaic=True))
    assert not os.path.exists(os.path.join(out, "mosaic_classes.tif"))
    other = tmp_path / "other"
    other.mkdir()
    gdal.Translate(str(other / "tile_0_0.tif"), os.path.join(tiles, "tile_0_1.tif"))
    with pytest.raises(BatchInputError, match="would write the same outputs"):
        run_batch(request(model_path, out, inputs=(os.path.join(tiles, "tile_0_0.tif"), str(other))))


def test_cli_batch(model_path, tiles, tmp_path) -> None:
    out = str(tmp_path / "out")
    proc = engine_cli("batch", "--model", model_path, "--output-dir", out, "--threads", "1", "--compile", "off",
                      os.path.join(tiles, "tile_0_0.tif"), os.path.join(tiles, "tile_1_*.tif"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["event"] == "start" and len(lines[0]["inputs"]) == 6
    assert lines[-1]["event"] == "done" and lines[-1]["counts"]["done"] == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = engine_cli("batch", "--model", model_path, "--output-dir", str(tmp_path / "out2"), str(empty))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    error = json.loads(lines[0])
    assert error["kind"] == "BatchInputError" and "holds no rasters" in error["message"] and error["hint"]
    assert not os.path.exists(tmp_path / "out2")
