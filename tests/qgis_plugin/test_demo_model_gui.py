"""The bundled demo model in the real ``qgis`` application (Xvfb): a fresh profile offers it with no import step, and
Segment layer on the bundled Potsdam sample gives the model's five classes, styled. Screenshots for the README:
``demo_dialog.png`` (dialog showing the demo model's metadata) and ``demo_map.png`` (the styled result).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from real_qgis import run_qgis, write_project

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "samples" / "potsdam_2_10_rgb.tif"
DEMO_CLASSES = ["impervious_surface", "building", "low_vegetation", "tree", "car"]

STEPS = """
def steps(result):
    layer = list(QgsProject.instance().mapLayers().values())[0]
    iface.mapCanvas().setExtent(layer.extent())
    dlg = open_dialog("rspSegmentLayerAction", "dialog", 700, 120)
    result["models"] = [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())]
    index = next(i for i, t in enumerate(result["models"]) if "demo_lite_potsdam" in t)
    dlg.model_combo.setCurrentIndex(index)
    dlg.layer_combo.setLayer(layer)
    dlg.vector_check.setChecked(True)
    pump(0.5)
    screenshot(dlg, "demo_dialog.png")
    dlg.run_button.click()
    wait_for(lambda: dlg.runner is None, 240, "the run to finish")
    result["status"] = dlg.status_label.text()
    result["labels"] = class_labels()
    dlg.hide()
    map_screenshot(layer, "demo_map.png")
"""


@pytest.fixture
def potsdam_project(qgis_app, tmp_path) -> Path:
    return write_project(tmp_path / "project", SAMPLE, "potsdam_2_10", "demo.qgz")


def test_bundled_demo_model_segments_the_sample(tmp_path, potsdam_project) -> None:
    result = run_qgis(tmp_path, STEPS, project=potsdam_project)
    assert any("demo_lite_potsdam" in m for m in result["models"]), result["models"]
    assert (potsdam_project.parent / "potsdam_2_10_demo_lite_potsdam_classes.tif").exists(), result.get("status")
    classes = [v for k, v in result["labels"].items() if k.endswith("classes")]
    assert classes and classes[0] == DEMO_CLASSES, result["labels"]
    assert not any(s.startswith("FAILED") for s in result.get("screenshots", []))
