"""The Processing algorithm through ``processing.run`` with the real engine on a small real raster."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from plugin_test_support import CLASS_NAMES
from qgis.core import QgsApplication, QgsPalettedRasterRenderer, QgsProcessingFeedback, QgsProject


def test_algorithm_is_registered(provider) -> None:
    algorithm = QgsApplication.processingRegistry().algorithmById("rspsegmentation:segmentraster")
    assert algorithm is not None
    assert algorithm.displayName() == "Segment raster with RSP model"
    precision = algorithm.parameterDefinition("PRECISION")
    assert precision.flags() & precision.FlagAdvanced and precision.defaultValue() == 0
    assert [o.split(" ")[0] for o in precision.options()] == ["auto", "fp32", "bf16"]


def test_processing_run_on_real_raster(provider, real_model, sample_raster, tmp_path) -> None:
    import processing

    out, polys = tmp_path / "classes.tif", tmp_path / "polys.gpkg"
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    processing.runAndLoadResults(
        "rspsegmentation:segmentraster",
        {
            "INPUT": str(sample_raster),
            "MODEL": str(real_model),
            "DEVICE": 0,
            "BATCH_SIZE": 4,
            "PRECISION": 1,  # fp32
            "OUTPUT": str(out),
            "OUTPUT_VECTOR": str(polys),
        },
        feedback=feedback,
    )
    loaded = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert isinstance(loaded["Classified raster"].renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in loaded["Classified raster"].renderer().classes()] == list(CLASS_NAMES)
    assert [c.label() for c in loaded["Polygons"].renderer().categories()] == list(CLASS_NAMES)
    QgsProject.instance().removeAllMapLayers()
    ds = gdal.Open(str(out))
    source = gdal.Open(str(sample_raster))
    assert (ds.RasterXSize, ds.RasterYSize) == (source.RasterXSize, source.RasterYSize)
    assert ds.GetGeoTransform() == source.GetGeoTransform()
    labels = ds.GetRasterBand(1).ReadAsArray()
    assert set(np.unique(labels)) <= set(range(len(CLASS_NAMES))) | {255}
    assert polys.exists()
    assert progress and max(progress) == pytest.approx(100.0)


def test_processing_cancel_leaves_no_output(provider, real_model, sample_raster, tmp_path) -> None:
    import processing

    out = tmp_path / "classes.tif"
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 0 else None)
    processing.run(
        "rspsegmentation:segmentraster",
        {"INPUT": str(sample_raster), "MODEL": str(real_model), "BATCH_SIZE": 1, "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert feedback.isCanceled()
    assert not out.exists()


def test_processing_gsd_reaches_the_engine_and_bad_values_are_refused(provider, real_model, sample_raster,
                                                                       tmp_path) -> None:  # fmt: skip
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "classes.tif"
    result = processing.run(
        "rspsegmentation:segmentraster",
        {"INPUT": str(sample_raster), "MODEL": str(real_model), "GSD": "1", "OUTPUT": str(out)},
    )
    ds = gdal.Open(result["OUTPUT"])
    assert (ds.RasterXSize, ds.RasterYSize) == (212, 212)  # read at 1 m, written back on the 0.5 m source grid
    labels = ds.GetRasterBand(1).ReadAsArray()
    assert (labels[0::2, 0::2][:105, :105] == labels[1::2, 1::2][:105, :105]).mean() > 0.9  # 2×2 blocks
    bad = tmp_path / "bad.tif"
    with pytest.raises(QgsProcessingException, match="GSD must be"):
        processing.run(
            "rspsegmentation:segmentraster",
            {"INPUT": str(sample_raster), "MODEL": str(real_model), "GSD": "fine", "OUTPUT": str(bad)},
        )
    assert not bad.exists()


@pytest.mark.parametrize("selected_only", [False, True])
def test_mask_honours_selected_features_only(qgis_processing, qgis_new_project, selected_only) -> None:
    from osgeo import ogr
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsProcessingContext,
        QgsProcessingFeatureSourceDefinition,
        QgsVectorLayer,
    )

    from qgis_plugin.processing_algorithm import MASK, SegmentRasterAlgorithm

    polygons = QgsVectorLayer("Polygon?crs=EPSG:32615&field=n:integer", "aoi", "memory")
    features = []
    for n in range(3):
        feature = QgsFeature(polygons.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({n} 0,{n + 1} 0,{n + 1} 1,{n} 1,{n} 0))"))
        feature["n"] = n
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(polygons)
    polygons.selectByExpression('"n" = 1')
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    algorithm = SegmentRasterAlgorithm()
    algorithm.initAlgorithm()
    # The Processing dialog passes a source definition when "Selected features only" is ticked.
    path = algorithm._write_mask({MASK: QgsProcessingFeatureSourceDefinition(polygons.id(), selected_only)}, context)
    dataset = ogr.Open(path)  # keep the dataset referenced while its layer is read
    layer = dataset.GetLayer(0)
    assert sorted(f["n"] for f in layer) == ([1] if selected_only else [0, 1, 2])
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32615"
    QgsProject.instance().removeAllMapLayers()
