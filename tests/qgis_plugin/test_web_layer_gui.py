"""In the real ``qgis`` application (Xvfb): an XYZ basemap served on 127.0.0.1 is segmented over the canvas extent
from the Segment dialog; the result lies on the tiles' pixel grid, in the project folder, styled in the project.

Screenshot (tests/artifacts/screenshots/): ``segment_xyz_dialog.png`` (the dialog with the download size shown).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from osgeo import gdal
from plugin_test_support import CLASS_NAMES
from real_qgis import run_qgis

from tests.engine.remote_support import make_xyz_pyramid, serve, xyz_resolution

pytestmark = pytest.mark.gui

SWISSIMAGE = Path(__file__).resolve().parents[1] / "data" / "swissimage" / "lausanne_1091-322_00_big.tif"
ZOOM = 17

STEPS = """
def steps(result):
    from qgis.core import QgsRectangle
    layer = QgsProject.instance().mapLayersByName("basemap")[0]
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(*BOX))
    canvas.refresh()
    pump(0.5)
    e = canvas.extent()
    result["canvas"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    dlg = open_dialog("rspSegmentLayerAction", "dialog", 700, 120)
    dlg.layer_combo.setLayer(layer)
    dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData("canvas"))
    dlg.vector_check.setChecked(False)
    dlg.confidence_check.setChecked(False)
    dlg._update_enabled()
    result["info"] = dlg.gsd_info.text()
    result["output"] = dlg.raster_out.filePath()
    screenshot(dlg, "segment_xyz_dialog.png")
    dlg.run_button.click()
    wait_for(lambda: dlg.runner is None, 240, "the run to finish")
    result["status"] = dlg.status_label.text()
    layers = {}
    for group in result_groups():
        for node in group.findLayers():
            lyr = node.layer()
            info = {"renderer": type(lyr.renderer()).__name__, "source": lyr.source()}
            if hasattr(lyr.renderer(), "classes"):
                info["labels"] = [c.label for c in lyr.renderer().classes()]
            layers[lyr.name()] = info
    result["layers"] = layers
    dlg.hide()
"""


def write_xyz_project(folder: Path, url: str) -> Path:
    from qgis.core import QgsProject, QgsRasterLayer

    folder.mkdir()
    project = QgsProject()
    template = url.replace("{", "%7B").replace("}", "%7D")
    layer = QgsRasterLayer(f"type=xyz&url={template}&zmax={ZOOM}&zmin=0", "basemap", "wms")
    assert layer.isValid()
    project.addMapLayer(layer)
    project.setCrs(layer.crs())
    path = folder / "basemap.qgz"
    assert project.write(str(path))
    project.clear()
    return path


def test_segment_xyz_layer_in_real_qgis(qgis_app, tmp_path, real_model) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server: run `make test-gui`")
    root = tmp_path / "www"
    root.mkdir()
    pyramid = make_xyz_pyramid(str(SWISSIMAGE), str(root), ZOOM)
    mosaic = gdal.Open(pyramid.mosaic)
    gt = mosaic.GetGeoTransform()
    cx, cy = gt[0] + gt[1] * mosaic.RasterXSize / 2, gt[3] + gt[5] * mosaic.RasterYSize / 2
    box = (cx - 80 * gt[1], cy - 60 * gt[1], cx + 80 * gt[1], cy + 60 * gt[1])
    with serve(str(root)) as server:
        project = write_xyz_project(tmp_path / "project", f"{server.url}/tiles/{{z}}/{{x}}/{{y}}.png")
        result = run_qgis(tmp_path, f"BOX = {box!r}\n" + STEPS, project=project, models=[real_model])
        served = server.stats()
    assert result["status"].startswith("Done"), result["status"] + result["_log"]
    assert "Downloads " in result["info"] and "(zoom 17, about" in result["info"]
    output = Path(result["output"])
    assert output == project.parent / f"basemap_{real_model.stem}_classes.tif"  # the project folder
    assert output.is_file()
    assert any(p.startswith("/tiles/17/") for p in served["paths"])
    ds = gdal.Open(str(output))
    out_gt, res = ds.GetGeoTransform(), xyz_resolution(ZOOM)
    assert out_gt[1] == pytest.approx(res) and out_gt[5] == pytest.approx(-res)
    col, row = (out_gt[0] - gt[0]) / res, (gt[3] - out_gt[3]) / res
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)  # tile pixels
    xmin, ymin, xmax, ymax = result["canvas"]
    assert xmin - res <= out_gt[0] <= xmin + 1e-6 and ymax - 1e-6 <= out_gt[3] <= ymax + res  # covers the canvas
    assert out_gt[0] + ds.RasterXSize * res >= xmax - 1e-6 and out_gt[3] - ds.RasterYSize * res <= ymin + 1e-6
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "3857"
    classes = [v for k, v in result["layers"].items() if k.endswith("classes")]
    assert classes and classes[0]["renderer"] == "QgsPalettedRasterRenderer"
    assert classes[0]["labels"] == list(CLASS_NAMES)
