"""``python -m training suggest``: ranked squares where labelling helps most, checked against values computed here.

The squares' uncertainty is compared with numpy means over the engine's own ``--uncertainty`` raster of the same
raster; geometries are checked with OGR (inside the raster, apart from each other and from the labels, in the labels'
CRS); the command line keeps the engine's contract (JSON lines, exit codes 0/1/130, nothing under --output on error).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine.predict import PredictRequest, predict
from tests.engine.conftest import make_model_file, potsdam_pixels, write_geotiff
from training.__main__ import main
from training.suggest import SuggestRequest, suggest
from training.suggest_squares import Candidates, pick

gdal.UseExceptions()
ogr.UseExceptions()
ROOT = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH, PIXEL = 192, 256, 0.5
X0, Y1 = 500000.0, 5800000.0  # the raster's top-left corner, EPSG:32633
FIELDS = ("rank", "uncertainty", "score", "predicted", "predicted_share", "classes", "mean_confidence", "col", "row")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A seeded lite network (3 classes, tile 64, stride 48, no GSD: the raster is read as it is)."""
    return make_model_file(str(tmp_path_factory.mktemp("model") / "lite.rspmodel"))


@pytest.fixture
def raster(tmp_path: Path) -> str:
    return write_geotiff(str(tmp_path / "ortho.tif"), potsdam_pixels(HEIGHT, WIDTH), 32633, (X0, Y1), (PIXEL, PIXEL))


def srs(epsg: int) -> osr.SpatialReference:
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def box(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def write_labels(path: Path, wkts: list[str], epsg: int = 32633, classes: list[str | None] | None = None) -> str:
    """A GeoPackage layer of any geometries (``wkts`` in EPSG:32633, written in ``epsg``), field ``class``."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("labels", srs=srs(epsg), geom_type=ogr.wkbUnknown)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    ct = osr.CoordinateTransformation(srs(32633), srs(epsg))
    for i, wkt in enumerate(wkts):
        f = ogr.Feature(layer.GetLayerDefn())
        geom = ogr.CreateGeometryFromWkt(wkt)
        geom.Transform(ct)
        f.SetGeometry(geom)
        name = (classes or ["building"] * len(wkts))[i]
        if name is not None:
            f.SetField("class", name)
        layer.CreateFeature(f)
    layer = ds = None
    return str(path)


def read_squares(path: str) -> tuple[list[dict], osr.SpatialReference]:
    ds = ogr.Open(path)
    layer = ds.GetLayer()
    assert layer.GetName() == "suggestions"
    rows = []
    for f in layer:
        rows.append({**{k: f.GetField(k) for k in FIELDS}, "size_px": f.GetField("size_px"),
                     "geom": f.GetGeometryRef().Clone()})  # fmt: skip
    layer_srs = layer.GetSpatialRef().Clone()
    ds = None
    return rows, layer_srs


def to_raster_crs(geom: ogr.Geometry, from_srs: osr.SpatialReference) -> ogr.Geometry:
    geom = geom.Clone()
    from_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if not from_srs.IsSame(srs(32633)):
        geom.Transform(osr.CoordinateTransformation(from_srs, srs(32633)))
    return geom


def engine_rasters(model: str, raster: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The engine's own uncertainty and class rasters of ``raster`` (same defaults as ``suggest``)."""
    out = folder / "engine"
    out.mkdir()
    predict(PredictRequest(model=model, input=raster, output=str(out / "c.tif"), uncertainty=str(out / "u.tif"),
                           compile="off"))  # fmt: skip
    return gdal.Open(str(out / "u.tif")).ReadAsArray(), gdal.Open(str(out / "c.tif")).ReadAsArray()


def test_squares_are_ranked_by_uncertainty_inside_the_raster_and_apart(model: str, raster: str, tmp_path) -> None:
    size = 32
    result = suggest(SuggestRequest(model=model, raster=raster, count=6, size=size))
    assert result.output == str(tmp_path / "ortho_suggestions.gpkg")  # the default: next to the raster
    squares, layer_srs = read_squares(result.output)
    assert layer_srs.IsSame(srs(32633))  # no labels: the raster's CRS
    assert [s["rank"] for s in squares] == list(range(1, 7))
    unc, classes = engine_rasters(model, raster, tmp_path)
    step = size // 2
    grid = [(r, c) for r in range(0, HEIGHT - size + 1, step) for c in range(0, WIDTH - size + 1, step)]
    means = {(r, c): float(unc[r : r + size, c : c + size].mean()) for r, c in grid}
    dominant = {(r, c): int(np.argmax(np.bincount(classes[r : r + size, c : c + size].ravel(), minlength=3)))
                for r, c in grid}  # fmt: skip
    strata = np.bincount(list(dominant.values()), minlength=3)
    # rank 1: the most uncertain square of the largest stratum (the class predicted most in the most squares)
    firsts = [max(means[k] for k in grid if dominant[k] == s) for s in np.flatnonzero(strata == strata.max())]
    assert any(squares[0]["uncertainty"] == pytest.approx(f, abs=1e-5) for f in firsts)
    names = ("impervious", "building", "vegetation")
    for s in squares:
        assert s["predicted"] == names[dominant[(s["row"], s["col"])]]
    extent = ogr.CreateGeometryFromWkt(box(X0, Y1 - HEIGHT * PIXEL, X0 + WIDTH * PIXEL, Y1))
    for s in squares:
        assert s["uncertainty"] == pytest.approx(means[(s["row"], s["col"])], abs=1e-5)
        assert 0 <= s["uncertainty"] <= 1 and 0 < s["mean_confidence"] <= 1 and 0 < s["predicted_share"] <= 1
        assert s["predicted"] in ("impervious", "building", "vegetation") and 1 <= s["classes"] <= 3
        assert s["size_px"] == size
        assert s["geom"].Within(extent)
        assert s["geom"].GetArea() == pytest.approx((size * PIXEL) ** 2)
    for i, a in enumerate(squares):
        for b in squares[i + 1 :]:
            assert a["geom"].Intersection(b["geom"]).GetArea() < 1e-9
            gap = max(abs(a["row"] - b["row"]), abs(a["col"] - b["col"])) - size
            assert gap >= 0
    first = [s for s in squares if s["rank"] <= 3]  # room for three squares one square size apart
    assert all(max(abs(a["row"] - b["row"]), abs(a["col"] - b["col"])) >= 2 * size
               for i, a in enumerate(first) for b in first[i + 1 :])  # fmt: skip


def test_squares_avoid_labels_of_any_geometry_and_use_their_crs(model: str, raster: str, tmp_path) -> None:
    wkts = [
        box(X0 + 10, Y1 - 60, X0 + 70, Y1 - 20),  # a polygon
        f"LINESTRING({X0 + 5} {Y1 - 90},{X0 + 120} {Y1 - 80})",  # a line
        f"POINT({X0 + 100} {Y1 - 30})",  # a point
    ]
    labels = write_labels(tmp_path / "labels.gpkg", wkts, epsg=4326)
    output = str(tmp_path / "s.gpkg")
    suggest(SuggestRequest(model=model, raster=raster, labels=labels, class_field="class", count=8, size=24,
                           output=output))  # fmt: skip
    squares, layer_srs = read_squares(output)
    assert len(squares) == 8
    assert layer_srs.IsSame(srs(4326))  # the labels' CRS: the analyst digitises there
    inside = [to_raster_crs(s["geom"], layer_srs).Buffer(-0.01) for s in squares]  # interiors, in the raster's CRS
    for geom in inside:
        for wkt in wkts:
            assert not geom.Intersects(ogr.CreateGeometryFromWkt(wkt))
    for i, a in enumerate(inside):
        assert all(not a.Intersects(b) for b in inside[i + 1 :])


def test_squares_lie_in_valid_pixels_and_follow_count_and_size(model: str, tmp_path) -> None:
    pixels = potsdam_pixels(HEIGHT, WIDTH)
    pixels[:, :, :100] = 0  # the left part is nodata
    raster = write_geotiff(str(tmp_path / "nodata.tif"), pixels, 32633, (X0, Y1), (PIXEL, PIXEL), nodata=0)
    output = str(tmp_path / "s.gpkg")
    result = suggest(SuggestRequest(model=model, raster=raster, count=3, size=48, output=output))
    squares, _ = read_squares(output)
    assert len(squares) == 3 and len(result.suggestions) == 3
    for s in squares:
        assert s["col"] >= 100 and s["size_px"] == 48
        assert (pixels[0, s["row"] : s["row"] + 48, s["col"] : s["col"] + 48] > 0).all()
        x0, x1, y0, y1 = s["geom"].GetEnvelope()
        assert (x1 - x0, y1 - y0) == (pytest.approx(48 * PIXEL), pytest.approx(48 * PIXEL))


def test_default_size_is_the_models_tile(model: str, raster: str, tmp_path) -> None:
    result = suggest(SuggestRequest(model=model, raster=raster, count=2, output=str(tmp_path / "s.gpkg")))
    assert [s["size_px"] for s in result.suggestions] == [64, 64]


def candidates(
    rows: list[int], cols: list[int], unc: list[float], mixes: list[list[int]], size: int = 10
) -> Candidates:
    counts = np.array(mixes, np.int64) * size * size // 100
    return Candidates(np.array(rows), np.array(cols), size, np.array(unc), np.full(len(rows), 0.9), counts,
                      np.ones(len(rows), bool))  # fmt: skip


def test_pick_keeps_squares_apart_and_prefers_new_class_mixes() -> None:
    c = candidates(
        rows=[0, 0, 0, 100, 200],
        cols=[0, 5, 100, 0, 200],
        unc=[0.9, 0.85, 0.5, 0.4, 0.1],
        mixes=[[50, 50, 0], [50, 50, 0], [50, 50, 0], [0, 0, 100], [0, 100, 0]],
    )
    chosen = [i for i, _score in pick(c, 5)]
    # strata by the class predicted most: class 0 holds 0, 1, 2 (weight √3), class 2 holds 3, class 1 holds 4 (1 each)
    # 0 (class 0 first, its most uncertain); then √3/2 = 0.87 < 1: class 2's 3 and class 1's 4 (a tie of equal
    # strata goes to the higher class index); then class 0 again: 1 overlaps 0 (never), so 2; nothing else fits
    assert chosen == [0, 3, 4, 2]


def test_pick_follows_the_predicted_class_mix_rare_classes_over_represented() -> None:
    # nine squares of class 0 (low uncertainty), one of class 1 (the lowest of all), all far apart
    unc = [0.30, 0.20, 0.25, 0.22, 0.21, 0.2, 0.2, 0.2, 0.2, 0.05]
    c = candidates(rows=[100 * i for i in range(10)], cols=[0] * 10, unc=unc, mixes=[[100, 0]] * 9 + [[0, 100]])
    chosen = [i for i, _ in pick(c, 4)]
    # weights √9 = 3 and 1: class 0 (3), class 0 (3/2 = 1.5), class 0 (3/3 = 1; ties with class 1's 1, larger
    # stratum first), class 1 (1 > 3/4); within class 0 by uncertainty: 0, 2, 3
    assert chosen == [0, 2, 3, 9]
    assert [i for i, _ in pick(c, 3)] == [0, 2, 3]  # by uncertainty alone the rare square would never come


def test_pick_drops_the_gap_before_giving_up_and_never_overlaps() -> None:
    c = candidates(rows=[0, 0, 0], cols=[0, 10, 5], unc=[0.9, 0.8, 0.95], mixes=[[100]] * 3)
    c.eligible[2] = False  # e.g. on a label
    assert [i for i, _ in pick(c, 3)] == [0, 1]  # touching (gap 0) is allowed once nothing farther is left


# ------------------------------------------------------------------------------------------- the command line
def run_cli(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["suggest", *args])
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("{") for line in lines), lines
    return code, [json.loads(line) for line in lines]


def test_cli_writes_the_layer_and_reports_it(model: str, raster: str, tmp_path, capsys) -> None:
    output = str(tmp_path / "s.gpkg")
    code, events = run_cli(capsys, "--model", model, "--raster", raster, "--count", "4", "--size", "32",
                           "--output", output)  # fmt: skip
    assert code == 0
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "done" and "progress" in names
    assert events[-1]["outputs"] == {"suggestions": output}
    assert [s["rank"] for s in events[-1]["suggestions"]] == [1, 2, 3, 4]
    assert os.path.isfile(output)
    code, events = run_cli(capsys, "--model", model, "--raster", raster, "--output", output)
    assert code == 1 and "--overwrite" in events[-1]["message"]
    code, events = run_cli(capsys, "--model", model, "--raster", raster, "--output", output, "--overwrite",
                           "--count", "1")  # fmt: skip
    assert code == 0 and len(read_squares(output)[0]) == 1
    assert sorted(os.listdir(tmp_path)) == ["ortho.tif", "s.gpkg"]  # no temporary left


def bad_inputs(tmp_path: Path, model: str, raster: str) -> dict[str, list[str]]:
    text = tmp_path / "not_a_raster.tif"
    text.write_text("hello")
    gray = write_geotiff(str(tmp_path / "gray.tif"), potsdam_pixels(HEIGHT, WIDTH)[:1], 32633, (X0, Y1))
    empty = write_labels(tmp_path / "empty.gpkg", [])
    far = write_labels(tmp_path / "far.gpkg", [box(X0 + 1e4, Y1, X0 + 1e4 + 50, Y1 + 50)])
    unclassed = write_labels(tmp_path / "unclassed.gpkg", [box(X0, Y1 - 50, X0 + 50, Y1)], classes=[None])
    base = ["--model", model, "--raster", raster, "--output", str(tmp_path / "out" / "s.gpkg")]
    return {
        "unreadable raster": ["--model", model, "--raster", str(text), "--output", str(tmp_path / "out" / "s.gpkg")],
        "bands": ["--model", model, "--raster", gray, "--output", str(tmp_path / "out" / "s.gpkg")],
        "no features": [*base, "--labels", empty],
        "no overlap": [*base, "--labels", far],
        "class field unset": [*base, "--labels", unclassed, "--class-field", "class"],
        "class field missing": [*base, "--labels", far, "--class-field", "kind"],
        "count": [*base, "--count", "0"],
        "size too small": [*base, "--size", "4"],
        "size too large": [*base, "--size", "300"],
        "unwritable": ["--model", model, "--raster", raster, "--output", str(tmp_path / "missing" / "s.gpkg")],
        "model": ["--model", str(text), "--raster", raster, "--output", str(tmp_path / "out" / "s.gpkg")],
    }


def test_every_bad_input_is_one_error_line_exit_1_and_no_output(model: str, raster: str, tmp_path, capsys) -> None:
    (tmp_path / "out").mkdir()
    for case, args in bad_inputs(tmp_path, model, raster).items():
        code, events = run_cli(capsys, *args)
        assert code == 1, case
        assert [e["event"] for e in events if e["event"] == "error"] == ["error"], case
        assert events[-1]["event"] == "error" and events[-1]["message"] and events[-1]["hint"], case
        assert "\n" not in events[-1]["message"], case
        assert os.listdir(tmp_path / "out") == [], case


def test_sigterm_cancels_with_130_and_writes_nothing(model: str, raster: str, tmp_path) -> None:
    output = tmp_path / "s.gpkg"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RSP_ENGINE_HOLD_AT": "tile_write:1"}  # held until the signal
    proc = subprocess.Popen([sys.executable, "-m", "training", "suggest", "--model", model, "--raster", raster,
                             "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "progress":
            proc.send_signal(signal.SIGTERM)
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 130
    assert rest[-1]["event"] == "cancelled"
    assert not output.exists() and sorted(os.listdir(tmp_path)) == ["ortho.tif"]
