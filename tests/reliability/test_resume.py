"""Resumable runs through the real engine CLI: kill -9, then ``--resume``; refused resumes; locks; faults mid-run.

Every run is a real ``python -m engine predict`` process on real GeoTIFFs (small, so the file stays fast; the three
kill points on a larger raster are ``slow``). "Identical" means equal arrays for labels and confidence and equal
(class id, geometry) sets for the polygons.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, CliResult, real_pixels, run_engine, write_model, write_raster
from osgeo import gdal, ogr

from engine.journal import journal_path
from tests.engine.conftest import write_geotiff

gdal.UseExceptions()
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def tall_raster(path: Path, height: int, width: int) -> Path:
    """Real Potsdam pixels, stacked to ``height`` rows (tiled GeoTIFF, DEFLATE, 256² blocks)."""
    px = np.tile(real_pixels(512, 512), (1, -(-height // 512), -(-width // 512)))[:, :height, :width]
    write_geotiff(str(path), np.ascontiguousarray(px), 32633, interp=False,
                  options=("TILED=YES", "COMPRESS=DEFLATE", "BLOCKXSIZE=256", "BLOCKYSIZE=256"))  # fmt: skip
    return path


def predict_args(model: Path, raster: Path, out: Path, *extra: str, vector: bool = True) -> list[str]:
    args = ["predict", "--model", str(model), "--input", str(raster), "--output", str(out / "classes.tif")]
    args += ["--confidence", str(out / "confidence.tif"), "--threads", "1", "--compile", "off"]
    if vector:
        args += ["--vector", str(out / "polygons.gpkg")]
    return [*args, *extra]


def kill_at(args: list[str], fraction: float) -> int:
    """Run the engine and SIGKILL it once a progress event reports ``fraction`` of the windows; the windows done."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)  # fmt: skip
    assert proc.stdout is not None
    done = -1
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["done"] >= fraction * event["total"]:
            os.kill(proc.pid, signal.SIGKILL)
            done = event["done"]
            break
    proc.wait(timeout=60)
    assert done >= 0, "the run ended before it could be killed"
    return done


def first(result: CliResult, name: str) -> dict:
    return next(e for e in result.events if e["event"] == name)


def polygons(path: Path) -> list[tuple[int, str]]:
    ds = ogr.Open(str(path))
    rows = sorted((f.GetField("class_id"), f.GetGeometryRef().ExportToWkt()) for f in ds.GetLayer())
    ds = None
    return rows


def assert_identical(a: Path, b: Path, vector: bool = True) -> None:
    for name in ("classes.tif", "confidence.tif"):
        x, y = gdal.Open(str(a / name)).ReadAsArray(), gdal.Open(str(b / name)).ReadAsArray()
        np.testing.assert_array_equal(x, y, err_msg=name)
    if vector:
        assert polygons(a / "polygons.gpkg") == polygons(b / "polygons.gpkg")


def folder(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    return out


def uninterrupted(model: Path, raster: Path, tmp_path: Path, *extra: str, vector: bool = True) -> tuple[Path, dict]:
    ref = folder(tmp_path, "reference")
    result = run_engine(predict_args(model, raster, ref, *extra, vector=vector))
    assert result.returncode == 0, result.stderr[-2000:]
    return ref, first(result, "start")


def kill_and_resume(model: Path, raster: Path, out: Path, fraction: float) -> tuple[int, dict, CliResult]:
    """kill -9 at ``fraction``, check what was left, resume; (windows done when killed, journal, resumed run)."""
    args = predict_args(model, raster, out)
    killed_at = kill_at(args, fraction)
    names = os.listdir(out)
    assert not {"classes.tif", "confidence.tif", "polygons.gpkg"} & set(names)  # nothing under a requested name
    journal = json.loads(Path(journal_path(str(out / "classes.tif"))).read_text())
    result = run_engine([*args, "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["classes.tif", "classes.tif.aux.xml", "confidence.tif", "polygons.gpkg"]
    return killed_at, journal, result


def test_kill_9_then_resume_is_identical_and_computes_fewer_windows(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 1024, 384)
    ref, start = uninterrupted(model, raster, tmp_path)
    out = folder(tmp_path, "out")
    killed_at, journal, resumed = kill_and_resume(model, raster, out, 0.6)
    assert journal["rows_done"] >= 256  # at least one output block row was durable
    rs = first(resumed, "start")
    assert rs["whole_total"] == start["total"] and rs["resumed_from_row"] == journal["rows_done"]
    assert rs["total"] < start["total"]
    assert first(resumed, "done")["windows"] == rs["total"]
    assert_identical(ref, out)
    print(f"\nkilled at {killed_at}/{start['total']} windows; journal rows {journal['rows_done']}/1024; "
          f"resume computed {rs['total']} windows")  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_30_60_90_percent_then_resume(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 2048, 512)
    ref, start = uninterrupted(model, raster, tmp_path)
    seen = []
    for fraction in (0.3, 0.6, 0.9):
        out = folder(tmp_path, f"out{int(fraction * 100)}")
        killed_at, journal, resumed = kill_and_resume(model, raster, out, fraction)
        rs = first(resumed, "start")
        assert rs["total"] < start["total"] and rs["whole_total"] == start["total"]
        assert_identical(ref, out)
        seen.append((fraction, killed_at, journal["rows_done"], rs["total"]))
    assert seen[0][3] > seen[1][3] > seen[2][3]  # later kills leave less to compute
    for fraction, killed_at, rows, total in seen:
        print(f"\nkill at {fraction:.0%}: killed after {killed_at}/{start['total']} windows, {rows}/2048 rows "
              f"durable, resume computed {total} windows")  # fmt: skip


def unfinished_run(model: Path, raster: Path, out: Path) -> list[str]:
    """Leave an unfinished run in ``out`` (kill -9 at 60 %); its arguments."""
    args = predict_args(model, raster, out, vector=False)
    kill_at(args, 0.6)
    assert os.path.isfile(journal_path(str(out / "classes.tif")))
    return args


def snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out)) if not name.endswith(".lock")}


def test_resume_with_other_model_bands_tile_or_blend_is_refused(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 1024, 256)
    out = folder(tmp_path, "out")
    args = unfinished_run(model, raster, out)
    other_model = write_model(tmp_path / "other.rspmodel", class_names=("road", "roof", "tree"))
    before = snapshot(out)
    changes = {
        "model_sha256": ["--model", str(other_model)],
        "bands": ["--bands", "3,2,1"],
        "tile": ["--tile", "96"],
        "blend": ["--blend", "reference"],
    }
    for key, change in changes.items():
        result = run_engine([*args, *change, "--resume"])
        assert result.returncode == 1, key
        (error,) = result.errors
        assert error["kind"] == "ResumeError" and key in error["message"], error
        assert "Traceback" not in result.stderr
        assert snapshot(out) == before, key  # journal and partial rasters untouched
    result = run_engine([*args, "--resume"])  # the same options still resume (identity: the kill tests)
    assert result.returncode == 0 and "resumed_from_row" in first(result, "start")


def test_without_resume_the_leftovers_are_removed_and_the_run_starts_afresh(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 1024, 256)
    out = folder(tmp_path, "out")
    args = unfinished_run(model, raster, out)
    result = run_engine(args)
    assert result.returncode == 0
    start = first(result, "start")
    assert "resumed_from_row" not in start and first(result, "done")["windows"] == start["total"]
    assert "removed an unfinished run" in result.stderr and "--resume" in result.stderr
    assert sorted(os.listdir(out)) == ["classes.tif", "classes.tif.aux.xml", "confidence.tif"]


def test_resume_with_nothing_to_resume_runs_from_the_start(tmp_path: Path, model: Path) -> None:
    raster = write_raster(tmp_path / "in.tif", real_pixels(100, 120))
    out = folder(tmp_path, "out")
    result = run_engine([*predict_args(model, raster, out, vector=False), "--resume"])
    assert result.returncode == 0 and "no unfinished run to resume" in result.stderr


def test_second_run_on_the_same_output_is_refused_at_once(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 1024, 384)
    out, other = folder(tmp_path, "out"), folder(tmp_path, "other")
    first_run = subprocess.Popen([sys.executable, "-m", "engine", *predict_args(model, raster, out, vector=False)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    assert first_run.stdout is not None
    for line in first_run.stdout:
        if '"progress"' in line:
            break
    # Hold the first run (and its lock) still while the second starts: on a loaded machine a second interpreter
    # can take longer to start than the first run needs to finish.
    os.kill(first_run.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        second = run_engine(predict_args(model, raster, out, vector=False))
        refused_in = time.monotonic() - t0
    finally:
        os.kill(first_run.pid, signal.SIGCONT)
    assert first_run.poll() is None, "the first run ended before the second was tried"
    assert second.returncode == 1
    (error,) = second.errors
    assert error["kind"] == "RunLockedError" and "another run is writing" in error["message"]
    assert str(out / "classes.tif") in error["message"]
    third = run_engine(predict_args(model, raster, other, vector=False))  # another output: runs
    _rest, err = first_run.communicate(timeout=300)
    assert first_run.returncode == 0, err[-2000:]
    assert third.returncode == 0
    assert_identical(out, other, vector=False)
    assert refused_in < 30  # at once: before loading the network or reading windows (process start included)


def test_simulated_out_of_memory_halves_the_batch_and_keeps_the_labels(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raster = tall_raster(tmp_path / "in.tif", 512, 256)
    ref, _start = uninterrupted(model, raster, tmp_path, "--batch-size", "4", vector=False)
    out = folder(tmp_path, "out")
    args = predict_args(model, raster, out, "--batch-size", "4", vector=False)
    monkeypatch.setenv("RSP_ENGINE_INJECT_OOM", "1@3")  # from the 4th batch on, passes of >1 window fail
    result = run_engine(args)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [e for e in result.events if e["event"] == "warning"]
    assert [w["batch_size"] for w in warnings] == [2, 1]
    assert "out of memory" in warnings[0]["message"]
    a, b = (gdal.Open(str(d / "classes.tif")).ReadAsArray() for d in (ref, out))
    np.testing.assert_array_equal(a, b)


def test_one_window_that_does_not_fit_names_a_tile_size(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raster = write_raster(tmp_path / "in.tif", real_pixels(100, 120))
    out = folder(tmp_path, "out")
    monkeypatch.setenv("RSP_ENGINE_INJECT_OOM", "0")
    result = run_engine(predict_args(model, raster, out))
    assert result.returncode == 1
    (error,) = result.errors
    assert error["kind"] == "OutOfMemoryError" and "64×64" in error["message"]
    assert "--tile 32" in error["hint"]
    assert os.listdir(out) == []


def test_not_enough_disk_space_is_refused_before_start(tmp_path: Path, model: Path) -> None:
    """A real raster whose outputs cannot fit: a 2 000 000² VRT (no sources, reads as zeros) needs terabytes."""
    huge = str(tmp_path / "huge.vrt")
    ds = gdal.GetDriverByName("VRT").Create(huge, 2_000_000, 2_000_000, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5))
    ds = None
    out = folder(tmp_path, "out")
    t0 = time.monotonic()
    result = run_engine(predict_args(model, Path(huge), out))
    assert result.returncode == 1
    (error,) = result.errors
    assert error["kind"] == "DiskSpaceError" and str(out) in error["message"] and "free" in error["message"]
    assert "TiB" in error["message"]
    assert os.listdir(out) == []
    assert time.monotonic() - t0 < 60


def _fsize_limit(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_mid_run_keeps_the_journal_and_resumes(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 5th raster write fails with ENOSPC (injected, as a full disk makes it fail); then space is freed."""
    raster = tall_raster(tmp_path / "in.tif", 1024, 384)
    ref, start = uninterrupted(model, raster, tmp_path, vector=False)
    out = folder(tmp_path, "out")
    args = predict_args(model, raster, out, vector=False)
    monkeypatch.setenv("RSP_ENGINE_FAIL_AT", "tile_write:5")
    failed = run_engine(args)
    monkeypatch.delenv("RSP_ENGINE_FAIL_AT")
    assert failed.returncode == 1
    (error,) = failed.errors
    assert error["kind"] == "OutputPathError" and "No space left" in error["message"], error
    assert "--resume" in error["hint"], error
    assert not {"classes.tif", "confidence.tif"} & set(os.listdir(out))
    journal = json.loads(Path(journal_path(str(out / "classes.tif"))).read_text())
    assert 0 < journal["rows_done"] < 1024
    resumed = run_engine([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert first(resumed, "start")["total"] < start["total"]
    assert_identical(ref, out, vector=False)


def test_disk_full_while_finishing_keeps_every_row_and_resume_only_finishes(tmp_path: Path, model: Path) -> None:
    """RLIMIT_FSIZE lets every chunk be written but not the assembled confidence raster, as a full disk would."""
    raster = tall_raster(tmp_path / "in.tif", 1024, 384)
    ref, _start = uninterrupted(model, raster, tmp_path, vector=False)
    out = folder(tmp_path, "out")
    args = predict_args(model, raster, out, vector=False)
    failed = run_engine(args, preexec_fn=_fsize_limit(700_000))
    assert failed.returncode == 1
    (error,) = failed.errors
    assert error["kind"] == "OutputPathError" and "finishing the outputs failed" in error["message"], error
    assert "--resume" in error["hint"] and "Traceback" not in failed.stderr
    assert not {"classes.tif", "confidence.tif"} & set(os.listdir(out))
    journal = json.loads(Path(journal_path(str(out / "classes.tif"))).read_text())
    assert journal["rows_done"] == 1024
    resumed = run_engine([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert first(resumed, "start")["total"] == 0 and first(resumed, "done")["windows"] == 0
    assert_identical(ref, out, vector=False)
    assert sorted(os.listdir(out)) == ["classes.tif", "classes.tif.aux.xml", "confidence.tif"]


def corrupt_middle_block(path: Path, block_row: int) -> None:
    """Overwrite the compressed bytes of block (0, ``block_row``) of band 1 with garbage."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    offset = int(band.GetMetadataItem(f"BLOCK_OFFSET_0_{block_row}", "TIFF"))
    size = int(band.GetMetadataItem(f"BLOCK_SIZE_0_{block_row}", "TIFF"))
    ds = band = None
    with open(path, "r+b") as f:
        f.seek(offset + 2)
        f.write(bytes(np.random.default_rng(0).integers(0, 256, size - 4, dtype=np.uint8)))


def test_corrupt_block_names_the_window_and_resumes_once_fixed(tmp_path: Path, model: Path) -> None:
    raster = tall_raster(tmp_path / "in.tif", 1024, 256)
    good = raster.read_bytes()
    ref, start = uninterrupted(model, raster, tmp_path, vector=False)
    corrupt_middle_block(raster, 2)  # rows 512-767
    out = folder(tmp_path, "out")
    args = predict_args(model, raster, out, vector=False)
    failed = run_engine(args)
    assert failed.returncode == 1
    (error,) = failed.errors
    assert error["kind"] == "RasterReadError", error
    assert "cannot read rows" in error["message"] and "columns" in error["message"]
    row = int(error["message"].split("cannot read rows ")[1].split("-")[0])
    assert 512 - 64 < row < 768  # the window that reaches into the damaged block
    assert "Traceback" not in failed.stderr
    assert not {"classes.tif", "confidence.tif"} & set(os.listdir(out))
    journal = json.loads(Path(journal_path(str(out / "classes.tif"))).read_text())
    assert 256 <= journal["rows_done"] <= row
    raster.write_bytes(good)  # fixed: copied again
    resumed = run_engine([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert first(resumed, "start")["total"] < start["total"]
    assert_identical(ref, out, vector=False)
