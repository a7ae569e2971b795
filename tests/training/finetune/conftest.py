"""Fixtures of the fine-tuning tests (helpers in ``finetune_support.py``, a module name no other test folder uses)."""

from __future__ import annotations

import pytest
from finetune_support import LABELS_TIF, polygons_from_raster


@pytest.fixture(scope="session")
def potsdam_polygons(tmp_path_factory) -> str:
    """Polygons of the sample's labels, in the raster's CRS (EPSG:32633)."""
    return polygons_from_raster(LABELS_TIF, str(tmp_path_factory.mktemp("labels") / "labels.gpkg"))


@pytest.fixture(scope="session")
def potsdam_polygons_wgs84(tmp_path_factory) -> str:
    """The same polygons in EPSG:4326 (another CRS than the raster's)."""
    return polygons_from_raster(LABELS_TIF, str(tmp_path_factory.mktemp("labels") / "labels_4326.gpkg"), epsg=4326)
