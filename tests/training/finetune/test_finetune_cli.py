"""``python -m training finetune``: the engine's contract (JSON lines, exit codes) and every bad input of the issue.

Each bad input must end with one ``error`` event (a message and a hint), exit code 1, and no file under --output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from finetune_support import DEMO_MODEL, LABELS_TIF, RASTER, ROOT
from osgeo import ogr, osr

from training.__main__ import main

X0, Y1 = 368293.0, 5806246.0  # the sample raster's top-left corner (EPSG:32633), 25.6 m square


def polygons(path, features, epsg=32633, field="class"):
    """A GeoPackage of ``(wkt, class name)`` polygons."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("labels", srs=srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    for wkt, name in features:
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        f.SetField(field, name)
        layer.CreateFeature(f)
    del layer
    ds = None
    return str(path)


def box(x0, y0, x1, y1):
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def run(capsys, *args):
    code = main(["finetune", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, lines


def base(tmp_path, labels, *extra):
    return ["--raster", RASTER, "--labels", labels, "--class-field", "class", "--output",
            str(tmp_path / "out.rspmodel"), "--init", DEMO_MODEL, "--iters", "2", "--tile", "128",
            "--batch-size", "2", "--device", "cpu", "--work-dir", str(tmp_path / "work"), *extra]  # fmt: skip


def replaced(args, flag, value):
    """``args`` with ``flag``'s value replaced."""
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def bad_inputs(tmp_path, potsdam_polygons):
    far = polygons(
        tmp_path / "far.gpkg",
        [
            (box(X0 + 1e4, Y1 - 20, X0 + 1e4 + 20, Y1), "building"),
            (box(X0 + 1e4 + 20, Y1 - 20, X0 + 1e4 + 40, Y1), "tree"),
        ],
    )
    # a frame around the raster: its bounding box covers the raster, no pixel centre is inside it
    frame = box(X0 - 5, Y1 - 30.6, X0 + 30.6, Y1 + 5)[:-1] + ",(" + box(X0, Y1 - 25.6, X0 + 25.6, Y1)[9:]
    outside = polygons(tmp_path / "frame.gpkg", [(frame, "building"), (frame, "tree")])
    one = polygons(
        tmp_path / "one.gpkg",
        [(box(X0, Y1 - 10, X0 + 10, Y1), "building"), (box(X0 + 12, Y1 - 10, X0 + 22, Y1), "building")],
    )
    tiny = polygons(
        tmp_path / "tiny.gpkg",
        [(box(X0 + 1, Y1 - 2, X0 + 2, Y1 - 1), "building"), (box(X0 + 20, Y1 - 22, X0 + 21, Y1 - 21), "tree")],
    )
    good = base(tmp_path, potsdam_polygons)
    return {
        "labels and raster do not overlap": (base(tmp_path, far), "do not overlap"),
        "no labels inside the raster": (base(tmp_path, outside), "no labelled pixels"),
        "missing class field": (replaced(good, "--class-field", "kind"), "no field 'kind'"),
        "one class only": (base(tmp_path, one), "at least two"),
        "too few labelled pixels": (base(tmp_path, tiny), "too few labelled pixels"),
        "bands do not fit the start model": (
            replaced(good, "--raster", LABELS_TIF),
            "data bands but the model needs 3",
        ),
        "start model and backbone": ([*good, "--backbone", DEMO_MODEL], "not both"),
        "start model and another arch": (
            [*good, "--arch", "rsp_swin_t"],
            "is a lite_resnet model but --arch says rsp_swin_t",
        ),
        "unwritable output": (
            replaced(good, "--output", "/nonexistent/dir/m.rspmodel"),
            "output folder does not exist",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "labels and raster do not overlap",
        "no labels inside the raster",
        "missing class field",
        "one class only",
        "too few labelled pixels",
        "bands do not fit the start model",
        "start model and backbone",
        "start model and another arch",
        "unwritable output",
    ],
)
def test_bad_input_is_one_error_event_and_nothing_written(tmp_path, capsys, potsdam_polygons, case):
    args, expected = bad_inputs(tmp_path, potsdam_polygons)[case]
    code, events = run(capsys, *args)
    assert code == 1
    assert events[-1]["event"] == "error" and events[-1]["hint"]
    assert expected in events[-1]["message"], events[-1]
    assert not os.path.exists(args[args.index("--output") + 1])
    assert not any(e["event"] == "progress" for e in events)  # refused before any training


def test_sigterm_stops_training_within_seconds(tmp_path, potsdam_polygons):
    out = tmp_path / "out.rspmodel"
    args = base(tmp_path, potsdam_polygons)
    args[args.index("--iters") + 1] = "10000"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "training", "finetune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)  # fmt: skip
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["iteration"] >= 2:
            break
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - t0 < 10
    assert json.loads(rest.splitlines()[-1])["event"] == "cancelled"
    assert not out.exists()
    assert (tmp_path / "work" / "latest.pth").is_file()  # --resume continues from here


def test_no_start_given_starts_from_the_bundled_start_model(tmp_path, capsys, potsdam_polygons):
    from engine.model_file import read_model_info
    from training.finetune.start import DEFAULT_START_MODELS

    args = base(tmp_path, potsdam_polygons)
    del args[args.index("--init") : args.index("--init") + 2]
    code, events = run(capsys, *args)
    assert code == 0, events[-1]
    assert any(e["event"] == "status" and DEFAULT_START_MODELS[0] in e["message"] for e in events)
    assert read_model_info(str(tmp_path / "out.rspmodel")).provenance["start"] == DEFAULT_START_MODELS[0]
