"""A WMS layer served by a real QGIS Server (``qgis_mapserver``, Debian ``qgis-server``) on 127.0.0.1, segmented
through Processing: the WMS description at the model's GSD, pixels and labels equal to the local raster's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from osgeo import gdal
from plugin_test_support import DATA
from qgis.core import QgsProject, QgsRasterLayer

SWISSIMAGE = DATA / "swissimage" / "lausanne_1091-322_00_big.tif"  # 875×600 RGB, EPSG:2056, 0.5 m
SRC_WIN = (100, 80, 200, 150)  # xoff, yoff, xsize, ysize of the part segmented through the WMS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def qgis_server(tmp_path_factory):
    """``qgis_mapserver`` serving a project with the real ortho as layer ``ortho`` (WMS CRS EPSG:2056)."""
    binary = shutil.which("qgis_mapserver")
    if binary is None:
        pytest.skip("qgis_mapserver missing: install Debian's qgis-server (make setup)")
    folder = tmp_path_factory.mktemp("qgis_server")
    raster = folder / "ortho.tif"
    shutil.copy(SWISSIMAGE, raster)
    project = QgsProject()
    layer = QgsRasterLayer(str(raster), "ortho", "gdal")
    project.addMapLayer(layer)
    project.setCrs(layer.crs())
    project.writeEntry("WMSCrsList", "/", ["EPSG:2056"])
    assert project.write(str(folder / "ortho.qgs"))
    project.clear()
    port = free_port()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_SERVER_LOG_LEVEL": "2"}
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([binary, "-p", str(folder / "ortho.qgs"), f"127.0.0.1:{port}"], stdout=log,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/ows/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}?SERVICE=WMS&REQUEST=GetCapabilities", timeout=5) as answer:
                    assert b"<Name>ortho</Name>" in answer.read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_processing_segments_a_qgis_server_wms_layer(provider, real_model, qgis_server, tmp_path) -> None:
    import processing

    from qgis_plugin.web_layers import web_request

    layer = QgsRasterLayer(f"crs=EPSG:2056&format=image/png&layers=ortho&styles=&url={qgis_server}", "wms", "wms")
    assert layer.isValid() and layer.providerType() == "wms"
    source = gdal.Open(str(SWISSIMAGE))
    gt = source.GetGeoTransform()
    xoff, yoff, xsize, ysize = SRC_WIN
    xmin, ymax = gt[0] + xoff * gt[1], gt[3] + yoff * gt[5]
    box = (xmin, ymax + ysize * gt[5], xmin + xsize * gt[1], ymax)
    request = web_request(layer, box, 0.5)
    assert (request.width, request.height) == (xsize, ysize) and 'Service name="WMS"' in request.xml
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "classes.tif"
    try:
        processing.run(
            "rspsegmentation:segmentraster",
            {"INPUT": layer.id(), "MODEL": str(real_model), "OUTPUT": str(out),
             "EXTENT": f"{box[0]},{box[2]},{box[1]},{box[3]} [EPSG:2056]"},
        )  # fmt: skip
    finally:
        QgsProject.instance().removeAllMapLayers()
    ds = gdal.Open(str(out))
    assert ds.GetGeoTransform() == pytest.approx((xmin, 0.5, 0.0, ymax, 0.0, -0.5))
    assert (ds.RasterXSize, ds.RasterYSize) == (xsize, ysize)
    # the same part of the local raster through the engine directly: QGIS Server served the very pixels
    clip = str(tmp_path / "clip.tif")
    gdal.Translate(clip, str(SWISSIMAGE), srcWin=list(SRC_WIN))
    local = str(tmp_path / "local.tif")
    from engine.predict import PredictRequest, predict

    predict(PredictRequest(model=str(real_model), input=clip, output=local, compile="off"))
    local_ds = gdal.Open(local)
    labels = ds.GetRasterBand(1).ReadAsArray()
    np.testing.assert_array_equal(labels, local_ds.GetRasterBand(1).ReadAsArray())
    assert labels.max() < 6
