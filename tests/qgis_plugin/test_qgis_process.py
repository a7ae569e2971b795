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
