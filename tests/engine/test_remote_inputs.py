"""Inputs beyond local files, read from a real HTTP server on 127.0.0.1: a COG through /vsicurl/, an XYZ tile
pyramid through a GDAL service description, /vsizip/, and each network failure as a one-line error with a hint."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import zipfile

import numpy as np
import pytest
from osgeo import gdal

from engine import sources
from engine.errors import ParameterError, RasterReadError
from engine.predict import PredictRequest, predict
from engine.sources import RemoteReadError
from engine.web_tiles import mercator_latitude, xyz_service_xml, zoom_for_gsd
from tests.engine.conftest import DATA, NUM_CLASSES, make_model_file, read
from tests.engine.remote_support import make_xyz_pyramid, serve, xyz_resolution
from tests.engine.test_cli_vector_distributed import engine_cli

gdal.UseExceptions()

SWISSIMAGE = os.path.join(DATA, "swissimage", "lausanne_1091-322_00_big.tif")  # 875×600 RGB, EPSG:2056, 0.5 m
ZOOM = 17  # ≈ 0.81 m ground pixels at the ortho's 47.4°N: 12 tiles of 256²


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """A web root with a COG, an XYZ pyramid and a zip of a GeoTIFF, served on 127.0.0.1 by a child process."""
    root = tmp_path_factory.mktemp("www")
    gdal.Translate(str(root / "ortho.tif"), SWISSIMAGE, format="COG", creationOptions=["BLOCKSIZE=256"])
    pyramid = make_xyz_pyramid(SWISSIMAGE, str(root), ZOOM)
    with zipfile.ZipFile(root / "ortho.zip", "w") as z:
        z.write(SWISSIMAGE, "folder/ortho.tif")
    with serve(str(root)) as server:
        yield server, pyramid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(model: str, source: str, out: str, **kw) -> tuple[np.ndarray, list[dict]]:
    events: list[dict] = []
    predict(PredictRequest(model=model, input=source, output=out, threads=2, compile="off", **kw), events.append)
    return read(out), events


WINDOW = (300, 200, 256, 192)  # xoff, yoff, xsize, ysize of the 875×600 ortho: keeps the runs short


def test_cog_through_vsicurl_equals_the_local_file(model_path, site, tmp_path) -> None:
    server, _ = site
    local_out, remote_out = str(tmp_path / "local.tif"), str(tmp_path / "remote.tif")
    local, _ = run(model_path, os.path.join(server.root, "ortho.tif"), local_out, window=WINDOW)
    before = server.stats()
    remote, events = run(model_path, f"/vsicurl/{server.url}/ortho.tif", remote_out, window=WINDOW)
    np.testing.assert_array_equal(remote, local)
    assert gdal.Open(remote_out).GetGeoTransform() == pytest.approx(gdal.Open(local_out).GetGeoTransform())
    after = server.stats()
    assert after["requests"] > before["requests"]  # it really went over HTTP
    assert after["bytes"] - before["bytes"] < os.path.getsize(os.path.join(server.root, "ortho.tif"))  # ranges only
    assert events[0]["input"] == f"/vsicurl/{server.url}/ortho.tif"
    # a bare URL is read the same way
    again, _ = run(model_path, f"{server.url}/ortho.tif", str(tmp_path / "url.tif"), window=WINDOW)
    np.testing.assert_array_equal(again, local)


def test_vsizip_input(model_path, site, tmp_path) -> None:
    server, _ = site
    name = "ortho.zip/folder/ortho.tif"
    zipped, _ = run(model_path, f"/vsizip/{server.root}/{name}", str(tmp_path / "zip.tif"), window=WINDOW)
    remote_zip, _ = run(model_path, f"/vsizip//vsicurl/{server.url}/{name}", str(tmp_path / "rz.tif"), window=WINDOW)
    local, _ = run(model_path, SWISSIMAGE, str(tmp_path / "local.tif"), window=WINDOW)
    np.testing.assert_array_equal(zipped, local)
    np.testing.assert_array_equal(remote_zip, local)


def pyramid_bbox(pyramid, half_px: int = 110) -> tuple[float, float, float, float]:
    """An EPSG:3857 box of ``2 * half_px`` tile pixels around the centre of the pyramid (where the ortho has data)."""
    ds = gdal.Open(pyramid.mosaic)
    gt = ds.GetGeoTransform()
    cx, cy = gt[0] + gt[1] * ds.RasterXSize / 2, gt[3] + gt[5] * ds.RasterYSize / 2
    d = half_px * gt[1]
    return (cx - d, cy - d, cx + d, cy + d)


def test_xyz_tiles_segment_on_the_tiles_grid(model_path, site, tmp_path) -> None:
    server, pyramid = site
    xml = tmp_path / "xyz.xml"
    xml.write_text(xyz_service_xml(f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png", ZOOM))
    bbox = pyramid_bbox(pyramid)
    out = str(tmp_path / "xyz_out.tif")
    labels, events = run(model_path, str(xml), out, bbox=bbox)
    # the same run on the GeoTIFF the tiles were cut from, clipped to the same box (a web service is read for the
    # requested extent only, so windows start at its corner): same pixels, same grid
    clip = str(tmp_path / "clip.tif")
    gdal.Translate(clip, pyramid.mosaic, projWin=[bbox[0], bbox[3], bbox[2], bbox[1]])
    ref_out = str(tmp_path / "ref.tif")
    ref, _ = run(model_path, clip, ref_out, bands=(1, 2, 3))
    assert labels.shape == ref.shape == (220, 220)
    np.testing.assert_array_equal(labels, ref)
    got, want = gdal.Open(out), gdal.Open(ref_out)
    assert got.GetGeoTransform() == pytest.approx(want.GetGeoTransform(), abs=1e-6)
    assert got.GetSpatialRef().GetAuthorityCode(None) == "3857"
    res = xyz_resolution(ZOOM)
    gt = got.GetGeoTransform()
    assert gt[1] == pytest.approx(res) and ((gt[0] + 20037508.342789244) / res) % 1 == pytest.approx(0, abs=1e-6)
    assert labels.max() < NUM_CLASSES and len(np.unique(labels)) > 1
    start = events[0]
    lat = mercator_latitude((bbox[1] + bbox[3]) / 2)  # ≈ 47.4°N
    assert start["native_gsd_m"][0] == pytest.approx(res * np.cos(np.radians(lat)), rel=0.005)  # ground metres
    # the text of the description works as --input too
    again, _ = run(model_path, xml.read_text(), str(tmp_path / "text.tif"), bbox=bbox)
    np.testing.assert_array_equal(again, labels)


def test_xyz_missing_tiles_are_nodata_with_a_warning(model_path, site, tmp_path, caplog) -> None:
    server, pyramid = site
    xml = tmp_path / "xyz.xml"
    xml.write_text(xyz_service_xml(f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png", ZOOM))
    mosaic = gdal.Open(pyramid.mosaic)
    west, north = mosaic.GetGeoTransform()[0], mosaic.GetGeoTransform()[3]
    res = xyz_resolution(ZOOM)
    bbox = (west - 64 * res, north - 96 * res, west + 64 * res, north)  # half west of the pyramid: the server has none
    caplog.set_level(logging.WARNING, logger="engine")
    labels, _events = run(model_path, str(xml), str(tmp_path / "out.tif"), bbox=bbox)
    assert labels.shape == (96, 128)
    assert (labels[:, :64] == 255).all()  # the missing tiles
    present = mosaic.GetRasterBand(4).ReadAsArray(0, 0, 64, 96)
    np.testing.assert_array_equal(labels[:, 64:] < NUM_CLASSES, present > 0)  # the tiles' own transparency kept
    assert "had no data from the web service" in caplog.text


def test_gsd_model_on_xyz_resamples_from_ground_metres(site, tmp_path) -> None:
    server, pyramid = site
    model = make_model_file(str(tmp_path / "m2.rspmodel"), gsd_m=2.0)
    lat = mercator_latitude(pyramid_bbox(pyramid)[1])
    assert zoom_for_gsd(2.0, lat) == 16 and zoom_for_gsd(0.82, lat) == ZOOM
    xml = tmp_path / "xyz.xml"
    xml.write_text(xyz_service_xml(f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png", ZOOM))
    labels, events = run(model, str(xml), str(tmp_path / "out.tif"), bbox=pyramid_bbox(pyramid))
    start = events[0]
    assert start["resampled"] and start["gsd_m"][0] == pytest.approx(2.0, rel=0.02)
    assert start["resampling_factor"][0] == pytest.approx(2.0 / start["native_gsd_m"][0], rel=0.02)  # ≈ 2.4, not 1.7
    assert labels.max() < NUM_CLASSES


def no_outputs(folder) -> bool:
    return not [n for n in os.listdir(folder) if n.endswith((".tif", ".gpkg")) or n.startswith(".")]


@pytest.mark.parametrize(
    ("path", "error", "text", "hint"),
    [
        ("/missing.tif", RemoteReadError, "not found on the server (HTTP 404)", "check the address"),
        ("/error500/ortho.tif", RemoteReadError, "server error (HTTP 500)", "try again later"),
        ("/norange/ortho.tif", RemoteReadError, "does not support HTTP range requests", "download the file first"),
    ],
)
def test_remote_file_errors(model_path, site, tmp_path, path, error, text, hint) -> None:
    server, _ = site
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error) as info:
        run(model_path, f"/vsicurl/{server.url}{path}", str(out / "x.tif"), vector=str(out / "x.gpkg"))
    message = str(info.value)
    assert text in message and "\n" not in message and hint in info.value.hint
    assert no_outputs(out)


def test_unreachable_server_and_tile_errors(model_path, site, tmp_path) -> None:
    server, pyramid = site
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RemoteReadError, match="no answer from the server") as info:
        run(model_path, f"/vsicurl/{dead}/ortho.tif", str(tmp_path / "a.tif"))
    assert "network connection" in info.value.hint and time.monotonic() - t0 < 20
    bbox = pyramid_bbox(pyramid)
    for url, text in ((f"{server.url}/error500/tiles", "server error (HTTP 500)"), (f"{dead}/tiles", "no answer")):
        xml = tmp_path / "bad.xml"
        xml.write_text(xyz_service_xml(url + "/{z}/{x}/{y}.png", ZOOM))
        with pytest.raises(RemoteReadError, match=text.replace("(", r"\(").replace(")", r"\)")) as info:
            run(model_path, str(xml), str(tmp_path / "b.tif"), bbox=bbox)
        assert "\n" not in str(info.value)
    # the whole world at zoom 17 is refused with the number, before any download
    xml.write_text(xyz_service_xml(f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png", ZOOM))
    with pytest.raises(ParameterError, match=r"the whole service .* 3\.36e\+07×3\.36e\+07|33554432×33554432"):
        run(model_path, str(xml), str(tmp_path / "c.tif"))
    with pytest.raises(RasterReadError, match="input raster not found"):
        run(model_path, str(tmp_path / "nothere.xml"), str(tmp_path / "d.tif"))
    assert no_outputs(tmp_path)


def test_cli_remote_error_is_one_line_and_a_slow_server_times_out(model_path, site, tmp_path) -> None:
    server, _ = site
    out = str(tmp_path / "out.tif")
    env_timeout = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "0"}
    t0 = time.monotonic()
    old = {k: os.environ.get(k) for k in env_timeout}
    os.environ.update(env_timeout)
    try:
        proc = engine_cli("predict", "--model", model_path, "--input", f"{server.url}/slow/ortho.tif", "--output", out,
                          timeout=60)  # fmt: skip
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    elapsed = time.monotonic() - t0
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout + proc.stderr
    error = json.loads(lines[0])
    assert error["kind"] == "RemoteReadError" and "no answer from the server" in error["message"]
    assert "GDAL_HTTP_TIMEOUT=2 s" in error["hint"] and elapsed < 30
    assert not os.path.exists(out)


def test_names_are_classified() -> None:
    assert sources.dataset_name("https://example.com/a.tif") == "/vsicurl/https://example.com/a.tif"
    assert sources.is_remote("/vsicurl/http://x/a.tif") and sources.is_remote("<GDAL_WMS><Service/></GDAL_WMS>")
    assert not sources.is_remote("/data/a.tif") and sources.is_local_path("/data/a.tif")
    assert not sources.is_local_path("/vsizip/a.zip/b.tif")
    assert sources.describe("<GDAL_WMS><ServerUrl>http://h/t/${z}</ServerUrl>") == "the web service at http://h/t/${z}"


def test_cli_xyz_and_cog(model_path, site, tmp_path) -> None:
    server, pyramid = site
    xml = tmp_path / "xyz.xml"
    xml.write_text(xyz_service_xml(f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png", ZOOM))
    bbox = ",".join(repr(v) for v in pyramid_bbox(pyramid, 40))
    out = str(tmp_path / "xyz.tif")
    proc = engine_cli("predict", "--model", model_path, "--input", str(xml), f"--bbox={bbox}", "--output", out,
                      "--threads", "1", "--compile", "off")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["event"] == "done" and gdal.Open(out).RasterXSize == 80
    cog = str(tmp_path / "cog.tif")
    proc = engine_cli("predict", "--model", model_path, "--input", f"{server.url}/ortho.tif", "--output", cog,
                      "--window", "0,0,96,64", "--threads", "1", "--compile", "off")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert gdal.Open(cog).GetGeoTransform() == pytest.approx(gdal.Open(SWISSIMAGE).GetGeoTransform())


def test_web_tiles_templates_zoom_and_standard_library_only() -> None:
    import ast
    import sys

    from engine import web_tiles

    assert web_tiles.gdal_tile_url("https://t/{z}/{x}/{y}.png") == ("https://t/${z}/${x}/${y}.png", True)
    assert web_tiles.gdal_tile_url("https://t/{z}/{x}/{-y}.png") == ("https://t/${z}/${x}/${y}.png", False)
    assert "<YOrigin>bottom</YOrigin>" in web_tiles.xyz_service_xml("https://t/{z}/{x}/{-y}.png", 3)
    for bad, text in (("https://t/{q}.png", "quadkey"), ("https://t/{z}/{x}.png", "lacks")):
        with pytest.raises(web_tiles.WebLayerError, match=text):
            web_tiles.gdal_tile_url(bad)
    assert web_tiles.zoom_for_gsd(0.3, 0.0) == 19  # 0.30 m at the equator
    assert web_tiles.zoom_for_gsd(0.3, 60.0) == 18  # half that on the ground at 60°N
    assert web_tiles.zoom_for_gsd(0.01, 47.0, zmax=19) == 19 and web_tiles.zoom_for_gsd(50000, 47.0, zmin=3) == 3
    assert web_tiles.extent_pixels((0.0, 0.0, 2 * web_tiles.xyz_resolution(10), 1.0), 10) == (2, 1)
    with open(web_tiles.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    modules |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}  # the plugin imports it in QGIS's Python


def test_no_directory_listing_only_while_a_remote_name_opens() -> None:
    """Set process-wide, GDAL_DISABLE_READDIR_ON_OPEN would hide the .aux.xml sidecars (class names) of every local
    file opened later in the same process (engine batch, the Python API, training accuracy)."""
    from engine import sources

    assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") is None
    with sources.opening("/vsicurl/http://127.0.0.1:9/x.tif"):
        assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
    with sources.opening("/tmp/local.tif"):
        assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") is None
    assert gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") is None
