"""The algorithm from ``qgis_process`` (no GUI), with the packaged plugin enabled in a throw-away profile."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from osgeo import gdal
from real_qgis import make_profile


def _qgis_process() -> str | None:
    # Debian's /usr/bin/qgis_process wrapper adds QGIS_OPTS from /etc/default/qgis (--noversioncheck), which
    # qgis_process rejects; the .bin next to it is the real program.
    for name in ("qgis_process.bin", "qgis_process"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_qgis_process_runs_the_algorithm(tmp_path, real_model, sample_raster) -> None:
    program = _qgis_process()
    if program is None:
        pytest.skip("qgis_process is not installed")
    make_profile(tmp_path / "profiles")
    out = tmp_path / "classes.tif"
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_OPTIONS_PATH",)}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profiles"), QT_QPA_PLATFORM="offscreen", QGIS_OPTS="")
    proc = subprocess.run(
        [
            program,
            "run",
            "rspsegmentation:segmentraster",
            "--",
            f"INPUT={sample_raster}",
            f"MODEL={real_model}",
            f"OUTPUT={out}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"OUTPUT:\t{out}" in proc.stdout
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize) == (212, 212)
    assert ds.GetGeoTransform() == gdal.Open(str(sample_raster)).GetGeoTransform()


def _run_algorithm(tmp_path, algorithm: str, parameters: dict[str, str]) -> subprocess.CompletedProcess:
    """``qgis_process run <algorithm> -- K=V ...`` with the packaged plugin (and its bundled training package)."""
    program = _qgis_process()
    if program is None:
        pytest.skip("qgis_process is not installed")
    make_profile(tmp_path / "profiles")
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_OPTIONS_PATH", "PYTHONPATH")}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profiles"), QT_QPA_PLATFORM="offscreen", QGIS_OPTS="")
    args = [f"{key}={value}" for key, value in parameters.items()]
    proc = subprocess.run(
        [program, "run", algorithm, "--", *args], env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _numbers(stdout: str) -> dict[str, float]:
    found = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":\t")
        if key in ("OA", "KAPPA", "MIOU", "MF1"):
            found[key] = float(value)
    return found


def test_qgis_process_finetunes_and_measures_accuracy(tmp_path) -> None:
    from plugin_test_support import POTSDAM_LABELS, POTSDAM_RASTER, polygons_from_raster

    from engine.model_file import read_model_info

    labels = polygons_from_raster(POTSDAM_LABELS, tmp_path / "labels.gpkg")
    model = tmp_path / "mine.rspmodel"
    proc = _run_algorithm(
        tmp_path,
        "rspsegmentation:finetune",
        {
            "INPUT": str(POTSDAM_RASTER),
            "LABELS": labels,
            "CLASS_FIELD": "class",
            "ITERATIONS": "2",
            "TILE": "128",
            "BATCH_SIZE": "2",
            "DEVICE": "0",
            "OUTPUT": str(model),
        },
    )
    assert f"OUTPUT:\t{model}" in proc.stdout
    metrics = _numbers(proc.stdout)
    info = read_model_info(model)
    assert metrics == {
        "OA": info.metrics["OA"],
        "KAPPA": info.metrics["kappa"],
        "MIOU": info.metrics["mIoU"],
        "MF1": info.metrics["mF1"],
    }

    report = tmp_path / "accuracy.json"
    proc = _run_algorithm(
        tmp_path / "second",
        "rspsegmentation:accuracy",
        {"PREDICTION": str(POTSDAM_LABELS), "REFERENCE": labels, "CLASS_FIELD": "code", "OUTPUT": str(report)},
    )  # the label raster against the polygons traced from it (both in integer codes)
    assert _numbers(proc.stdout)["OA"] == 100.0 and report.is_file()
