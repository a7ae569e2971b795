"""Bad input through the real engine CLI: a clear one-line error, no traceback, and nothing left behind.

Each case builds its inputs in a temporary folder and runs ``python -m engine predict``. Every failing case must:
exit non-zero, print exactly one ``error`` event with a non-empty message and hint, print no Python traceback on
stderr, and leave no file under any requested output name nor any temporary leftover in the output folder.

Decisions, written down here and in the engine's docstrings:
- a raster without a CRS runs (with a warning on stderr): pixel geometry is still valid and labels do not need a CRS;
  areas are then in squared map units;
- an all-nodata raster is not an error: the outputs are valid rasters filled with the output nodata value;
- a nodata value inside the valid range is honoured as GDAL defines it, but a pixel is masked only when all its
  bands hold the nodata value, so a dark pixel in one band is not lost.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, real_pixels, run_engine, write_raster
from osgeo import gdal, ogr, osr

Case = Callable[[Path, Path, Path], tuple[list[str], list[Path]]]


def _outputs(tmp: Path) -> tuple[Path, Path, Path]:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    return out / "classes.tif", out / "polygons.gpkg", out / "confidence.tif"


def _predict(model: Path, raster: Path, tmp: Path, *extra: str) -> tuple[list[str], list[Path]]:
    labels, vector, conf = _outputs(tmp)
    args = ["predict", "--model", str(model), "--input", str(raster), "--output", str(labels)]
    args += ["--vector", str(vector), "--confidence", str(conf), "--threads", "1", *extra]
    return args, [labels, vector, conf]


def case_missing_file(tmp: Path, model: Path, raster: Path):
    return _predict(model, tmp / "nope.tif", tmp)


def case_not_a_raster(tmp: Path, model: Path, raster: Path):
    text = tmp / "notes.tif"
    text.write_text("this is not an image\n")
    return _predict(model, text, tmp)


def case_truncated_geotiff(tmp: Path, model: Path, raster: Path):
    data = raster.read_bytes()
    cut = tmp / "truncated.tif"
    cut.write_bytes(data[: len(data) // 3])
    return _predict(model, cut, tmp)


def case_zero_size_file(tmp: Path, model: Path, raster: Path):
    empty = tmp / "empty.tif"
    empty.write_bytes(b"")
    return _predict(model, empty, tmp)


def case_fewer_bands_than_the_model_needs(tmp: Path, model: Path, raster: Path):
    return _predict(model, write_raster(tmp / "one.tif", real_pixels(80, 80)[:1]), tmp)


def case_band_index_out_of_range(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bands", "1,2,7")


def case_wrong_number_of_bands_listed(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bands", "1,2")


def case_complex_data_type(tmp: Path, model: Path, raster: Path):
    data = real_pixels(64, 64).astype(np.float32)
    return _predict(model, write_raster(tmp / "complex.tif", data, gdal_type=gdal.GDT_CFloat32), tmp)


def case_bbox_outside_the_raster(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bbox", "0,0,10,10")


def case_bbox_in_an_unknown_crs(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bbox", "10,52,11,53", "--bbox-crs", "EPSG:999999")


def case_bbox_in_another_crs_outside(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bbox=-10,-10,-9,-9", "--bbox-crs", "EPSG:4326")


def case_negative_bbox_without_equals_sign(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--bbox", "-10,-10,-9,-9")


def case_unknown_option(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--tiles", "512")


def case_window_outside_the_raster(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--window", "5000,5000,10,10")


def _mask_file(tmp: Path, wkts: list[str]) -> Path:
    path = tmp / "mask.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    layer = ds.CreateLayer("mask", srs, ogr.wkbPolygon)
    for wkt in wkts:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = None
    return path


def case_mask_with_no_polygons(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--mask", str(_mask_file(tmp, [])))


def case_mask_that_is_not_a_vector(tmp: Path, model: Path, raster: Path):
    bad = tmp / "mask.gpkg"
    bad.write_text("garbage")
    return _predict(model, raster, tmp, "--mask", str(bad))


def case_model_file_missing(tmp: Path, model: Path, raster: Path):
    return _predict(tmp / "missing.rspmodel", raster, tmp)


def case_model_file_corrupt(tmp: Path, model: Path, raster: Path):
    bad = tmp / "corrupt.rspmodel"
    bad.write_bytes(os.urandom(4096))
    return _predict(bad, raster, tmp)


def case_model_file_truncated(tmp: Path, model: Path, raster: Path):
    bad = tmp / "truncated.rspmodel"
    bad.write_bytes(model.read_bytes()[:-5000])
    return _predict(bad, raster, tmp)


def _rewrite_metadata(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """Copy a model file with its JSON metadata edited (safetensors header rewritten, tensors untouched)."""
    import json

    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    info = json.loads(header["__metadata__"]["rsp_model"])
    edit(info)
    header["__metadata__"]["rsp_model"] = json.dumps(info)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return dst


def case_model_file_of_a_newer_format(tmp: Path, model: Path, raster: Path):
    newer = _rewrite_metadata(model, tmp / "newer.rspmodel", lambda m: m.update(format_version=99))
    return _predict(newer, raster, tmp)


def case_model_weights_with_wrong_keys(tmp: Path, model: Path, raster: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model))
    state["decode_head.conv_seg.weightX"] = state.pop("decode_head.conv_seg.weight")
    with open(model, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        import json

        meta = json.loads(f.read(n))["__metadata__"]
    bad = tmp / "renamed.rspmodel"
    save_file(state, str(bad), metadata=meta)
    return _predict(bad, raster, tmp)


def case_wrong_number_of_classes(tmp: Path, model: Path, raster: Path):
    def four(m: dict) -> None:
        m.update(num_classes=4, class_names=[*m["class_names"], "extra"], colors=[*m["colors"], [1, 2, 3]])

    return _predict(_rewrite_metadata(model, tmp / "k4.rspmodel", four), raster, tmp)


def case_architecture_unknown(tmp: Path, model: Path, raster: Path):
    return _predict(_rewrite_metadata(model, tmp / "arch.rspmodel", lambda m: m.update(arch="rsp_vit_h")), raster, tmp)


def case_output_directory_missing(tmp: Path, model: Path, raster: Path):
    labels = tmp / "no" / "such" / "dir" / "classes.tif"
    args = ["predict", "--model", str(model), "--input", str(raster), "--output", str(labels)]
    return args, [labels]


def case_output_directory_not_writable(tmp: Path, model: Path, raster: Path):
    # Root ignores permission bits, so the "directory" is a regular file: no process can create entries in it.
    blocker = tmp / "blocker"
    blocker.write_text("a file, not a folder")
    labels = blocker / "classes.tif"
    args = ["predict", "--model", str(model), "--input", str(raster), "--output", str(labels)]
    return args, [labels]


def case_tile_zero(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--tile", "0")


def case_stride_larger_than_tile(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--tile", "64", "--stride", "100")


def case_batch_size_zero(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--batch-size", "0")


def case_threads_negative(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--threads", "-2")


def case_cuda_without_cuda(tmp: Path, model: Path, raster: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return _predict(model, raster, tmp, "--device", "cuda")


def case_value_max_not_positive(tmp: Path, model: Path, raster: Path):
    return _predict(model, raster, tmp, "--value-max", "0")


CASES: dict[str, Case] = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


def assert_clean_failure(result, requested: list[Path], folder_before: set[str], folder: Path) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode != 0, result.events
    assert len(result.errors) == 1, (result.events, result.stderr[-2000:])
    error = result.errors[0]
    assert error["message"].strip() and "\n" not in error["message"], error
    assert error.get("hint", "").strip(), error
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for path in requested:
        assert not path.exists(), f"{path} left behind"
    if folder.is_dir():
        assert set(os.listdir(folder)) == folder_before, f"leftovers: {set(os.listdir(folder)) - folder_before}"


# What the message must tell the analyst, for the cases where the generic family message would not do.
SAYS = {
    "architecture_unknown": "does not have",
    "output_directory_not_writable": "not a folder",
    "output_directory_missing": "does not exist",
    "truncated_geotiff": "truncated or damaged",
    "model_file_of_a_newer_format": "newer",
    "cuda_without_cuda": "--device cpu",
    "wrong_number_of_classes": "shape mismatches",
    "fewer_bands_than_the_model_needs": "needs 3",
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(name: str, tmp_path: Path, model: Path, raster: Path) -> None:
    args, requested = CASES[name](tmp_path, model, raster)
    folder = requested[0].parent
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    result = run_engine(args)
    assert_clean_failure(result, requested, before, folder)
    error = result.errors[0]
    assert "report the traceback" not in error["hint"]  # every case is an expected failure, not the catch-all
    assert SAYS.get(name, "") in error["message"]
    print(f"{name}: {result.errors[0]['message']} | hint: {result.errors[0]['hint']}")


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, model: Path, raster: Path) -> None:
    args, (labels, *_rest) = _predict(model, raster, tmp_path)
    labels.write_bytes(b"precious")
    result = run_engine(args)
    assert (
        result.returncode != 0
        and len(result.errors) == 1
        and "--overwrite" in result.errors[0]["hint"] + result.errors[0]["message"]
    )
    assert labels.read_bytes() == b"precious"
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path, model: Path) -> None:
    args, _ = case_not_a_raster(tmp_path, model, tmp_path)
    result = run_engine([*args, "--debug"])
    assert result.returncode != 0 and len(result.errors) == 1
    assert "Traceback" in result.stderr


def test_raster_without_crs_runs_with_a_warning(tmp_path: Path, model: Path) -> None:
    src = write_raster(tmp_path / "nocrs.tif", real_pixels(80, 96), epsg=None)
    args, (labels, *_rest) = _predict(model, src, tmp_path)
    result = run_engine(args)
    assert result.returncode == 0, result.events
    assert "crs" in result.stderr.lower()
    assert gdal.Open(str(labels)).ReadAsArray().shape == (80, 96)


def test_all_nodata_raster_gives_a_valid_empty_output(tmp_path: Path, model: Path) -> None:
    src = write_raster(tmp_path / "empty.tif", np.zeros((3, 70, 90), np.uint8), nodata=0)
    args, (labels, vector, _conf) = _predict(model, src, tmp_path)
    result = run_engine(args)
    assert result.returncode == 0, result.events
    ds = gdal.Open(str(labels))
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    assert nodata is not None and (ds.ReadAsArray() == nodata).all()
    assert ogr.Open(str(vector)).GetLayer(0).GetFeatureCount() == 0


def test_nodata_inside_the_valid_range_masks_only_full_matches(tmp_path: Path, model: Path) -> None:
    data = real_pixels(80, 80).copy()
    data[:, :10, :10] = 100  # all three bands at the nodata value: masked
    data[0, 40:50, 40:50] = 100  # one band only: a real pixel, predicted
    data[1:, 40:50, 40:50] = 7
    src = write_raster(tmp_path / "nd.tif", data, nodata=100)
    args, (labels, *_rest) = _predict(model, src, tmp_path)
    assert run_engine(args).returncode == 0
    ds = gdal.Open(str(labels))
    out, nodata = ds.ReadAsArray(), ds.GetRasterBand(1).GetNoDataValue()
    assert (out[:10, :10] == nodata).all()
    assert (out[40:50, 40:50] != nodata).all()


def _fsize_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_writing(tmp_path: Path, model: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE) makes writes fail mid-way, as a full disk does."""
    src = write_raster(tmp_path / "big.tif", real_pixels(300, 300))
    args, requested = _predict(model, src, tmp_path)
    folder = requested[0].parent
    result = run_engine(args, preexec_fn=_fsize_limit(40_000))
    assert_clean_failure(result, requested, set(), folder)


def test_sigterm_mid_run_cancels_cleanly(tmp_path: Path, model: Path) -> None:
    src = write_raster(tmp_path / "big.tif", np.tile(real_pixels(256, 256), (1, 3, 3)))
    args, requested = _predict(model, src, tmp_path, "--batch-size", "1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until windows are being processed
        if '"progress"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert '"cancelled"' in out and "Traceback" not in err
    assert os.listdir(requested[0].parent) == []


def test_concurrent_runs_on_the_same_output(tmp_path: Path, model: Path) -> None:
    """Two runs racing for one output: each finishes cleanly (0, or 1 with an error event) and the file is valid."""
    src = write_raster(tmp_path / "in.tif", real_pixels(200, 200))
    args, (labels, *_rest) = _predict(model, src, tmp_path)
    args = [a for a in args]  # same outputs for both
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes[0] == 0, results
    for out, err, code in results:
        assert "Traceback" not in err
        if code != 0:
            assert code == 1 and '"error"' in out
    ds = gdal.Open(str(labels))
    assert ds is not None and ds.ReadAsArray().shape == (200, 200)
    assert sorted(os.listdir(labels.parent)) == sorted(p.name for p in (labels, *_rest)) or labels.exists()


def test_same_run_twice_is_byte_identical(tmp_path: Path, model: Path) -> None:
    src = write_raster(tmp_path / "in.tif", real_pixels(150, 170))
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.tif"
        result = run_engine(
            ["predict", "--model", str(model), "--input", str(src), "--output", str(out), "--threads", "1"]
        )
        assert result.returncode == 0
        outs.append(out)
    a, b = (gdal.Open(str(o)).ReadAsArray() for o in outs)
    assert np.array_equal(a, b)
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_sub_extent_equals_the_whole_run_on_the_overlap(tmp_path: Path, model: Path) -> None:
    src = write_raster(tmp_path / "in.tif", real_pixels(160, 190))
    whole, part = tmp_path / "whole.tif", tmp_path / "part.tif"
    base = ["predict", "--model", str(model), "--input", str(src), "--threads", "1"]
    assert run_engine([*base, "--output", str(whole)]).returncode == 0
    assert run_engine([*base, "--output", str(part), "--window", "37,21,101,77"]).returncode == 0
    w, p = gdal.Open(str(whole)).ReadAsArray(), gdal.Open(str(part)).ReadAsArray()
    if p.shape == w.shape:  # written on the full grid, nodata outside the window
        p = p[21 : 21 + 77, 37 : 37 + 101]
    assert np.array_equal(w[21 : 21 + 77, 37 : 37 + 101], p)


_ = (shutil, time)  # imported for ad-hoc debugging of this suite
