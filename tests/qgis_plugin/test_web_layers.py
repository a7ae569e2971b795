"""Web layers (XYZ tiles from a real HTTP server on 127.0.0.1, WMS descriptions) in the Segment dialog and
Processing: the service description, the download size shown and refused, outputs in the project folder."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle

import qgis_plugin.model_catalog as model_catalog
from qgis_plugin import plugin_settings
from qgis_plugin.parameters import ExtentMode
from qgis_plugin.web_layers import WebLayerProblem, web_request
from tests.engine.remote_support import make_xyz_pyramid, serve, xyz_resolution

SWISSIMAGE = os.path.join(os.path.dirname(__file__), "..", "data", "swissimage", "lausanne_1091-322_00_big.tif")
ZOOM = 17


@pytest.fixture(scope="module")
def tile_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    pyramid = make_xyz_pyramid(SWISSIMAGE, str(root), ZOOM)
    with serve(str(root)) as server:
        yield server, pyramid


def xyz_layer(server, name: str = "basemap") -> QgsRasterLayer:
    url = f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png".replace("{", "%7B").replace("}", "%7D")
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmax={ZOOM}&zmin=0", name, "wms")
    assert layer.isValid()
    return layer


def centre_box(pyramid, half_px: int) -> tuple[float, float, float, float]:
    ds = gdal.Open(pyramid.mosaic)
    gt = ds.GetGeoTransform()
    cx, cy = gt[0] + gt[1] * ds.RasterXSize / 2, gt[3] + gt[5] * ds.RasterYSize / 2
    d = half_px * gt[1]
    return (cx - d, cy - d, cx + d, cy + d)


@pytest.fixture
def web_dialog(qgis_iface, qgis_new_project, qgis_canvas, tile_server, metadata_model, tmp_path, monkeypatch):
    from qgis_plugin.segment_dialog import SegmentDialog

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(metadata_model, models / metadata_model.name)
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: models)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [])
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    QgsProject.instance().setFileName(str(project_dir / "web.qgz"))
    server, pyramid = tile_server
    layer = xyz_layer(server)
    QgsProject.instance().addMapLayer(layer)
    qgis_canvas.setDestinationCrs(layer.crs())
    qgis_canvas.resize(400, 400)
    qgis_canvas.setExtent(QgsRectangle(*centre_box(pyramid, 100)))
    dlg = SegmentDialog(qgis_iface)
    dlg.layer_combo.setLayer(layer)
    dlg.overwrite_check.setChecked(False)
    dlg.vector_check.setChecked(False)
    dlg.confidence_check.setChecked(False)
    dlg.gsd_combo.setCurrentIndex(dlg.gsd_combo.findData("model"))
    dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData(ExtentMode.CANVAS.value))
    yield dlg, layer, project_dir
    dlg.close()
    dlg.deleteLater()
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setFileName("")


def test_xyz_layer_becomes_a_service_description_with_size_shown(web_dialog) -> None:
    dlg, _layer, project_dir = web_dialog
    assert dlg.raster_out.filePath() == str(project_dir / "basemap_potsdam_demo_classes.tif")  # project folder
    assert dlg.bands_edit.text() == "1,2,3"  # the description's red, green, blue
    info = dlg.gsd_info.text()
    assert "at 0.809 m/px (zoom 17, about" in info  # the model's 0.5 m is finer than the layer's last level
    params = dlg.gather_parameters()
    assert params.problems() == []
    args = params.engine_args()
    xml = args[args.index("--input") + 1]
    ds = gdal.Open(xml)  # a real GDAL description of the layer: the world at zoom 17 in EPSG:3857
    assert ds.GetDriver().ShortName == "WMS" and ds.RasterXSize == 256 * 2**ZOOM and ds.RasterCount == 4
    assert ds.GetGeoTransform()[1] == pytest.approx(xyz_resolution(ZOOM))
    bbox = [float(v) for v in args[args.index("--bbox") + 1].split(",")]
    canvas = dlg.iface.mapCanvas().extent()
    assert bbox == pytest.approx([canvas.xMinimum(), canvas.yMinimum(), canvas.xMaximum(), canvas.yMaximum()])
    width = round((bbox[2] - bbox[0]) / xyz_resolution(ZOOM))
    assert f"Downloads {width} × " in info or f"Downloads {width + 1} × " in info  # whole pixels covering the box


def test_too_large_extent_and_whole_layer_are_refused(web_dialog) -> None:
    dlg, _layer, _ = web_dialog
    plugin_settings.set_value("max_web_megapixels", 0.01)  # 10 000 pixels
    try:
        params = dlg.gather_parameters()
        problems = params.problems()
        assert len(problems) == 1 and "million pixels at 0.809 m/px, more than the 0 million allowed" in problems[0]
        assert "zoom in" in problems[0] and "plugin settings" in problems[0]
        assert not params.input_path  # nothing written
        dlg._update_enabled()
        assert "more than the 0 million allowed" in dlg.gsd_info.text()
    finally:
        plugin_settings.set_value("max_web_megapixels", 100)
    dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData(ExtentMode.WHOLE_LAYER.value))
    problems = dlg.gather_parameters().problems()
    assert any("covers the whole world" in p for p in problems)
    dlg.gsd_combo.setCurrentIndex(dlg.gsd_combo.findData("native"))
    dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData(ExtentMode.CANVAS.value))
    assert dlg.gather_parameters().problems() == []  # native: the layer's last zoom level


def test_wms_description_and_unwritable_crs(qgis_new_project) -> None:
    wms = QgsRasterLayer("crs=EPSG:2056&format=image/png&layers=ortho&styles=&url=http://127.0.0.1:9/wms", "w", "wms")
    wms.setCrs(QgsCoordinateReferenceSystem("EPSG:2056"))
    box = (2600000.0, 1200000.0, 2600100.0, 1200050.0)
    request = web_request(wms, box, 0.5)
    assert (request.width, request.height, request.bbox) == (200, 100, None)
    path = "/vsimem/wms.xml"
    gdal.FileFromMemBuffer(path, request.xml.encode())
    ds = gdal.Open(path)  # GDAL parses it without contacting the server
    assert (ds.RasterXSize, ds.RasterYSize) == (200, 100)
    assert ds.GetGeoTransform() == pytest.approx((2600000.0, 0.5, 0.0, 1200050.0, 0.0, -0.5))
    ds = None
    gdal.Unlink(path)
    with pytest.raises(WebLayerProblem, match="no resolution of its own"):
        web_request(wms, box, None)
    custom = QgsCoordinateReferenceSystem.fromProj("+proj=tmerc +lat_0=1 +lon_0=7.1234 +k=0.9991 +x_0=12 +units=m")
    assert custom.isValid() and not custom.authid()
    wms.setCrs(custom)
    with pytest.raises(WebLayerProblem, match="CRS without an authority code"):
        web_request(wms, box, 0.5)
    wmts = QgsRasterLayer("crs=EPSG:3857&format=image/png&layers=x&styles=&tileMatrixSet=g&url=http://127.0.0.1:9/c",
                          "t", "wms")  # fmt: skip
    with pytest.raises(WebLayerProblem, match="WMTS layer"):
        web_request(wmts, box, 0.5)


def test_processing_segments_the_xyz_layer_on_the_tiles_grid(provider, real_model, tile_server, tmp_path) -> None:
    import processing

    server, pyramid = tile_server
    layer = xyz_layer(server)
    QgsProject.instance().addMapLayer(layer)
    xmin, ymin, xmax, ymax = centre_box(pyramid, 60)
    out = tmp_path / "classes.tif"
    try:
        processing.run(
            "rspsegmentation:segmentraster",
            {"INPUT": layer.id(), "MODEL": str(real_model), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:3857]",
             "OUTPUT": str(out)},
        )  # fmt: skip
    finally:
        QgsProject.instance().removeAllMapLayers()
    ds = gdal.Open(str(out))
    gt, res = ds.GetGeoTransform(), xyz_resolution(ZOOM)
    mosaic_gt = gdal.Open(pyramid.mosaic).GetGeoTransform()
    assert gt[1] == pytest.approx(res) and gt[5] == pytest.approx(-res)
    col, row = (gt[0] - mosaic_gt[0]) / res, (mosaic_gt[3] - gt[3]) / res
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)  # tile pixels
    assert abs(gt[0] - xmin) <= res and abs(gt[3] - ymax) <= res
    assert (ds.RasterXSize, ds.RasterYSize) == (120, 120)
    labels = ds.GetRasterBand(1).ReadAsArray()
    assert labels.max() < 6 and len(np.unique(labels)) >= 1
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "3857"
    again = xyz_layer(server, "again")
    QgsProject.instance().addMapLayer(again)
    whole = {"INPUT": again.id(), "MODEL": str(real_model), "OUTPUT": str(tmp_path / "w.tif")}
    try:
        with pytest.raises(Exception, match="covers the whole world"):
            processing.run("rspsegmentation:segmentraster", whole)
    finally:
        QgsProject.instance().removeAllMapLayers()
    assert not (tmp_path / "w.tif").exists()


def test_remote_cog_layer_in_processing_and_dialog(provider, real_model, tile_server, tmp_path, qgis_iface) -> None:
    import processing

    server, _ = tile_server
    gdal.Translate(os.path.join(server.root, "ortho.tif"), SWISSIMAGE, format="COG")
    layer = QgsRasterLayer(f"/vsicurl/{server.url}/ortho.tif", "remote ortho", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    source = gdal.Open(SWISSIMAGE)
    gt = source.GetGeoTransform()
    xmin, ymax = gt[0] + 100 * gt[1], gt[3] + 50 * gt[5]
    xmax, ymin = xmin + 64 * gt[1], ymax + 48 * gt[5]
    out = tmp_path / "classes.tif"
    try:
        processing.run(
            "rspsegmentation:segmentraster",
            {"INPUT": layer.id(), "MODEL": str(real_model), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:2056]",
             "OUTPUT": str(out)},
        )  # fmt: skip
        ds = gdal.Open(str(out))
        assert ds.GetGeoTransform() == pytest.approx((xmin, gt[1], 0.0, ymax, 0.0, gt[5]))
        assert (ds.RasterXSize, ds.RasterYSize) == (64, 48)
        from qgis_plugin.segment_dialog import SegmentDialog

        project_dir = tmp_path / "project"
        project_dir.mkdir()
        QgsProject.instance().setFileName(str(project_dir / "p.qgz"))
        dlg = SegmentDialog(qgis_iface)
        dlg.layer_combo.setLayer(layer)
        params = dlg.gather_parameters()
        assert params.input_path == f"/vsicurl/{server.url}/ortho.tif"
        assert params.output_raster.startswith(str(project_dir))  # a remote layer's outputs: the project folder
        dlg.close()
        dlg.deleteLater()
    finally:
        QgsProject.instance().removeAllMapLayers()
        QgsProject.instance().setFileName("")
