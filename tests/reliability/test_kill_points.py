"""kill -9 at every kind of write, at several points, then ``--resume``: outputs identical to an uninterrupted run.

No timing: ``RSP_ENGINE_KILL_AT=kind:N`` (:mod:`engine.faults`) makes the engine SIGKILL itself just before its N-th
write of that kind. N is chosen from the writes an uninterrupted run really makes (``RSP_ENGINE_WRITE_COUNTS``):
the first, the middle and the last of each kind (the middle one only at the second width). The input is a real
aerial image (iSAID P0003, tests/data/isaid, see its SOURCES.md) at widths of 13 and 15 windows per row, with labels,
confidence and polygons on, compressed as the defaults are. "Identical": equal label and confidence arrays (byte for
byte) and equal polygon sets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, STRIDE, TILE, run_engine
from osgeo import gdal
from PIL import Image
from test_resume import assert_identical, first, folder, predict_args

from engine.faults import KINDS
from engine.journal import journal_path
from tests.engine.conftest import write_geotiff

gdal.UseExceptions()
ISAID = ROOT / "tests" / "data" / "isaid" / "P0003_crop.png"
WRITE_KINDS = [k for k in KINDS if k != "checkpoint_write"]  # the training checkpoint: tests/training
OUTPUTS = ["classes.tif", "classes.tif.aux.xml", "confidence.tif", "polygons.gpkg"]


def isaid_raster(path: Path, width: int) -> Path:
    """The real iSAID crop, ``width`` columns, as a tiled DEFLATE GeoTIFF."""
    rgb = np.asarray(Image.open(ISAID).convert("RGB")).transpose(2, 0, 1)[:, :, :width]
    write_geotiff(str(path), np.ascontiguousarray(rgb), 32633, interp=False,
                  options=("TILED=YES", "COMPRESS=DEFLATE", "BLOCKXSIZE=256", "BLOCKYSIZE=256"))  # fmt: skip
    return path


def reference_and_counts(
    model: Path, raster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict]:
    ref = folder(tmp_path, "reference")
    counts = tmp_path / "counts.json"
    monkeypatch.setenv("RSP_ENGINE_WRITE_COUNTS", str(counts))
    result = run_engine(predict_args(model, raster, ref))
    monkeypatch.delenv("RSP_ENGINE_WRITE_COUNTS")
    assert result.returncode == 0, result.stderr[-2000:]
    windows_per_row = -(-(gdal.Open(str(raster)).RasterXSize - TILE) // STRIDE) + 1
    assert windows_per_row >= 12
    return ref, json.loads(counts.read_text())


def kill_then_resume(model: Path, raster: Path, out: Path, kill: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run with ``RSP_ENGINE_KILL_AT=kill`` (it must die by SIGKILL), then ``--resume``; the resumed run's start."""
    args = predict_args(model, raster, out)
    monkeypatch.setenv("RSP_ENGINE_KILL_AT", kill)
    killed = run_engine(args)
    monkeypatch.delenv("RSP_ENGINE_KILL_AT")
    assert killed.returncode == -9, f"{kill}: rc {killed.returncode}\n{killed.stderr[-1500:]}"
    resumed = run_engine([*args, "--resume"])
    assert resumed.returncode == 0, f"{kill}: {resumed.stderr[-2000:]}"
    assert sorted(os.listdir(out)) == OUTPUTS, kill  # no debris, no journal, no chunk left
    return first(resumed, "start")


def points(counts: dict, kinds: list[str], every: bool = True) -> list[str]:
    """``kind:N`` for the first, middle and last write of each kind (``every=False``: the middle one only)."""
    chosen = []
    for kind in kinds:
        n = counts.get(kind, 0)
        assert n > 0, f"an uninterrupted run makes no {kind} write: {counts}"
        chosen += [f"{kind}:{i}" for i in sorted({1, (n + 1) // 2, n} if every else {(n + 1) // 2})]
    return chosen


@pytest.mark.slow
@pytest.mark.timeout(2400)  # about 40 engine processes: 2-3 min on 2 quiet cores, far more on a loaded machine
@pytest.mark.parametrize(("width", "every"), [(700, True), (600, False)])
def test_kill_at_every_write_kind_then_resume_is_identical(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, width: int, every: bool
) -> None:
    raster = isaid_raster(tmp_path / "in.tif", width)
    ref, counts = reference_and_counts(model, raster, tmp_path, monkeypatch)
    whole = None
    for i, kill in enumerate(points(counts, WRITE_KINDS, every)):
        out = folder(tmp_path, f"out{i}")
        start = kill_then_resume(model, raster, out, kill, monkeypatch)
        whole = start.get("whole_total", start["total"])
        assert start["total"] <= whole, kill
        assert_identical(ref, out)
    assert whole is not None


def test_kill_while_writing_chunks_and_again_while_resuming(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at the 2nd chunk's rename; the resumed run killed again at its own 2nd journal write; then resumed."""
    raster = isaid_raster(tmp_path / "in.tif", 600)
    ref, _counts = reference_and_counts(model, raster, tmp_path, monkeypatch)
    out = folder(tmp_path, "out")
    args = predict_args(model, raster, out)
    monkeypatch.setenv("RSP_ENGINE_KILL_AT", "rename:5")  # journal, chunk 1 (2 files), journal, then chunk 2
    assert run_engine(args).returncode == -9
    journal = json.loads(Path(journal_path(str(out / "classes.tif"))).read_text())
    assert journal["rows_done"] > 0 and len(journal["chunks"]) == 1
    assert not {"classes.tif", "confidence.tif", "polygons.gpkg"} & set(os.listdir(out))
    monkeypatch.setenv("RSP_ENGINE_KILL_AT", "journal_write:2")
    assert run_engine([*args, "--resume"]).returncode == -9
    monkeypatch.delenv("RSP_ENGINE_KILL_AT")
    resumed = run_engine([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    start = first(resumed, "start")
    assert start["resumed_from_row"] > journal["rows_done"] and start["total"] < start["whole_total"]
    assert sorted(os.listdir(out)) == OUTPUTS
    assert_identical(ref, out)
