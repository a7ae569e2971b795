"""The uncertainty raster (``--uncertainty``) and the polygons' ``confidence`` field, checked against values computed
independently: the network's own softmax through :func:`engine.inference.slide_inference` (torch, whole image in
memory), and numpy means over the pixels GDAL rasterises for each polygon."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import STRIDE, TILE, potsdam_pixels, read
from osgeo import gdal, ogr

from engine.blending import margin_uncertainty
from engine.inference import load_network, slide_inference
from engine.model_file import read_model_info
from engine.predict import PredictRequest, predict

gdal.UseExceptions()
ogr.UseExceptions()

HEIGHT, WIDTH = TILE + STRIDE, TILE + 2 * STRIDE  # every window whole: the engine pads none, like slide_inference


def run(model_path: str, raster: str, out: str, **kw) -> None:  # type: ignore[no-untyped-def]
    options = {"precision": "fp32", "compile": "off", "threads": 1, **kw}
    predict(PredictRequest(model=model_path, input=raster, output=os.path.join(out, "classes.tif"), **options))


def reference_probabilities(model_path: str, pixels: np.ndarray, blend: str) -> np.ndarray:
    """``(K, H, W)`` blended class probabilities of the whole image, computed in torch."""
    info = read_model_info(model_path)
    model, _ = load_network(model_path, "cpu")
    mean = torch.tensor(info.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(info.std, dtype=torch.float32)[:, None, None]
    x = (torch.from_numpy(pixels).float() - mean) / std
    with torch.no_grad():
        out = slide_inference(model, x[None], TILE, STRIDE, info.num_classes, blend=blend)[0]
    probs = out if blend == "smooth" else torch.softmax(out, dim=0)
    return probs.numpy()


@pytest.mark.parametrize("blend", ["smooth", "reference"])
def test_uncertainty_is_one_minus_the_top_two_margin_of_the_blended_probabilities(
    model_path: str, make_raster, tmp_path, blend: str
) -> None:
    pixels = potsdam_pixels(HEIGHT, WIDTH)
    raster = make_raster("in.tif", pixels)
    run(model_path, raster, str(tmp_path), blend=blend, uncertainty=str(tmp_path / "u.tif"),
        confidence=str(tmp_path / "c.tif"))  # fmt: skip
    probs = reference_probabilities(model_path, pixels, blend)
    top = np.sort(probs, axis=0)
    expected = 1.0 - (top[-1] - top[-2])
    uncertainty = read(str(tmp_path / "u.tif"))
    assert uncertainty.dtype == np.float32 and uncertainty.shape == (HEIGHT, WIDTH)
    np.testing.assert_allclose(uncertainty, expected, atol=2e-5)
    np.testing.assert_allclose(read(str(tmp_path / "c.tif")), top[-1], atol=2e-5)  # the same probabilities
    assert uncertainty.min() >= 0.0 and uncertainty.max() <= 1.0
    assert uncertainty.std() > 0.01  # the measure varies over a real image
    ds = gdal.Open(str(tmp_path / "u.tif"))
    assert ds.GetRasterBand(1).GetNoDataValue() == -1.0
    assert "1 - (p1 - p2)" in ds.GetRasterBand(1).GetDescription()


def test_masked_pixels_have_no_uncertainty(model_path: str, make_raster, tmp_path) -> None:
    pixels = potsdam_pixels(HEIGHT, WIDTH)
    pixels[:, :30, :40] = 0
    raster = make_raster("in.tif", pixels, nodata=0)
    run(model_path, raster, str(tmp_path), uncertainty=str(tmp_path / "u.tif"))
    labels, uncertainty = read(str(tmp_path / "classes.tif")), read(str(tmp_path / "u.tif"))
    assert (uncertainty[labels == 255] == -1.0).all() and (labels[:30, :40] == 255).all()
    assert (uncertainty[labels != 255] >= 0).all()


def test_margin_uncertainty_by_hand() -> None:
    probs = np.array([[0.7, 0.5, 1.0], [0.2, 0.5, 0.0], [0.1, 0.0, 0.0]], np.float32)  # (K=3, 3 pixels)
    np.testing.assert_allclose(margin_uncertainty(probs), [0.5, 1.0, 0.0], atol=1e-6)
    assert margin_uncertainty(np.ones((1, 4), np.float32)).tolist() == [0.0] * 4  # one class: never in doubt


def polygon_means(gpkg: str, values: np.ndarray, grid: str) -> list[tuple[float, float]]:
    """``(confidence field, numpy mean of values over the pixels GDAL rasterises for the polygon)`` per polygon."""
    ref = gdal.Open(grid)
    layer_ds = ogr.Open(gpkg)
    layer = layer_ds.GetLayer()
    pairs = []
    for feat in layer:
        mem = gdal.GetDriverByName("MEM").Create("", ref.RasterXSize, ref.RasterYSize, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(ref.GetGeoTransform())
        mem.SetProjection(ref.GetProjection())
        one = ogr.GetDriverByName("Memory").CreateDataSource("one")
        lyr = one.CreateLayer("one", srs=layer.GetSpatialRef())
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(feat.GetGeometryRef().Clone())
        lyr.CreateFeature(f)
        gdal.RasterizeLayer(mem, [1], lyr, burn_values=[1])
        mask = mem.GetRasterBand(1).ReadAsArray() > 0
        assert mask.any()
        pairs.append((feat.GetField("confidence"), float(values[mask].astype(np.float64).mean())))
    return pairs


def test_polygon_confidence_is_the_mean_confidence_over_its_pixels(model_path: str, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(HEIGHT, WIDTH))
    gpkg = str(tmp_path / "p.gpkg")
    run(model_path, raster, str(tmp_path), vector=gpkg, confidence=str(tmp_path / "c.tif"))
    pairs = polygon_means(gpkg, read(str(tmp_path / "c.tif")), str(tmp_path / "classes.tif"))
    assert len(pairs) >= 3
    for field, mean in pairs:
        assert 0.0 < field <= 1.0
        assert field == pytest.approx(mean, abs=1e-6)


def test_polygon_confidence_without_a_confidence_output_leaves_no_file_behind(
    model_path: str, make_raster, tmp_path
) -> None:
    raster = make_raster("in.tif", potsdam_pixels(HEIGHT, WIDTH))
    with_raster, without = tmp_path / "a", tmp_path / "b"
    with_raster.mkdir()
    without.mkdir()
    run(model_path, raster, str(with_raster), vector=str(with_raster / "p.gpkg"), confidence=str(with_raster / "c.tif"))
    run(model_path, raster, str(without), vector=str(without / "p.gpkg"), cog=True)

    def fields(path: str) -> list[tuple[int, float]]:
        ds = ogr.Open(path)
        rows = sorted((f.GetField("class_id"), f.GetField("confidence")) for f in ds.GetLayer())
        ds = None
        return rows

    assert fields(str(without / "p.gpkg")) == fields(str(with_raster / "p.gpkg"))
    assert sorted(os.listdir(without)) == ["classes.tif", "classes.tif.aux.xml", "p.gpkg"]


def test_same_file_for_uncertainty_and_another_output_is_refused(model_path: str, tmp_path) -> None:
    from engine.errors import ParameterError

    with pytest.raises(ParameterError, match="--uncertainty"):
        PredictRequest(model=model_path, input="in.tif", output="a.tif", uncertainty="a.tif")
