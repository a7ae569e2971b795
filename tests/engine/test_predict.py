"""The raster engine end to end on real GeoTIFFs: edges, sub-extents, masks, value scales, CRSs, GSD, cancel."""

from __future__ import annotations

import functools
import os
import threading

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr, osr

from bench.baseline import slide_inference as mmseg_slide
from engine.blending import LABEL_NODATA
from engine.errors import BandMismatchError, CancelledError, OutputPathError
from engine.inference import slide_inference
from engine.model_file import load_model_file
from engine.predict import PredictRequest, predict
from tests.engine.conftest import NUM_CLASSES, TILE, make_model_file, potsdam_pixels, read

gdal.UseExceptions()


def run(model: str, raster: str, out: str, **kw) -> np.ndarray:
    predict(PredictRequest(model=model, input=raster, output=out, threads=2, **kw))
    return read(out)


@pytest.mark.parametrize(("h", "w"), [(128, 128), (150, 97), (40, 30), (65, 64), (1, 70)])
def test_edges_every_pixel_predicted(model_path, make_raster, tmp_path, h, w) -> None:
    """Exact multiple, non-multiple, smaller than a tile, 1-px sliver past a tile, a 1-row raster."""
    raster = make_raster("in.tif", potsdam_pixels(h, w))
    labels = run(model_path, raster, str(tmp_path / "out.tif"))
    assert labels.shape == (h, w)
    assert labels.max() < NUM_CLASSES  # no nodata left anywhere


def test_shift_invariance_window_bbox(model_path, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(170, 130), origin=(500000.0, 5800000.0), pixel=(0.5, 0.5))
    whole = run(model_path, raster, str(tmp_path / "whole.tif"), batch_size=3)
    assert len(np.unique(whole)) == NUM_CLASSES  # a test that can see a difference
    part = run(model_path, raster, str(tmp_path / "part.tif"), window=(37, 51, 61, 90), batch_size=2)
    np.testing.assert_array_equal(part, whole[51:141, 37:98])
    # same kind of check with a bounding box given in EPSG:4326
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(32633)
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    lon0, lat0, _ = ct.TransformPoint(500000.0 + 20.2, 5800000.0 - 60.3)
    lon1, lat1, _ = ct.TransformPoint(500000.0 + 50.1, 5800000.0 - 30.4)
    bbox_out = str(tmp_path / "bbox.tif")
    labels = run(model_path, raster, bbox_out, bbox=(lon0, lat0, lon1, lat1), bbox_crs="EPSG:4326")
    gt = gdal.Open(bbox_out).GetGeoTransform()
    col, row = round((gt[0] - 500000.0) / 0.5), round((5800000.0 - gt[3]) / 0.5)
    assert 30 <= col <= 41 and 50 <= row <= 62  # the box, rounded outwards to whole pixels
    np.testing.assert_array_equal(labels, whole[row : row + labels.shape[0], col : col + labels.shape[1]])


def test_georeferencing_and_styling_round_trip(model_path, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(90, 70), epsg=2056, origin=(2538000.0, 1152000.0), pixel=(0.1, 0.1))
    out, conf = str(tmp_path / "out.tif"), str(tmp_path / "conf.tif")
    predict(PredictRequest(model=model_path, input=raster, output=out, confidence=conf))
    src, ds = gdal.Open(raster), gdal.Open(out)
    assert ds.GetGeoTransform() == pytest.approx(src.GetGeoTransform())
    assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "2056"
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == LABEL_NODATA and band.DataType == gdal.GDT_Byte
    assert band.GetCategoryNames()[:NUM_CLASSES] == ["impervious", "building", "vegetation"]
    assert band.GetColorTable().GetColorEntry(1)[:3] == (0, 0, 255)
    assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    c = read(conf)
    assert c.dtype == np.float32 and c.shape == (90, 70) and (c > 1 / NUM_CLASSES - 1e-6).all() and (c <= 1).all()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files left


def test_nodata_and_alpha_masks(model_path, make_raster, tmp_path) -> None:
    data = potsdam_pixels(100, 120)
    data[:, :, :50] = 0  # left part nodata in every band
    data[0, 80, 100] = 0  # a single dark value in one band is not a hole
    raster = make_raster("nd.tif", data, nodata=0)
    labels = run(model_path, raster, str(tmp_path / "nd_out.tif"))
    assert (labels[:, :50] == LABEL_NODATA).all() and (labels[:, 50:] < NUM_CLASSES).all()
    alpha = np.full((100, 120), 255, np.uint8)
    alpha[70:, :] = 0
    raster = make_raster("alpha.tif", potsdam_pixels(100, 120), alpha=alpha)
    labels = run(model_path, raster, str(tmp_path / "a_out.tif"))
    assert (labels[70:] == LABEL_NODATA).all() and (labels[:70] < NUM_CLASSES).all()
    # an all-nodata raster gives a valid, all-nodata output
    empty = make_raster("empty.tif", np.zeros((3, 40, 40), np.uint8), nodata=0)
    result = predict(PredictRequest(model=model_path, input=empty, output=str(tmp_path / "e.tif")))
    assert (read(str(tmp_path / "e.tif")) == LABEL_NODATA).all() and result.windows == 0
    assert sum(c["pixels"] for c in result.classes) == 0


def test_16bit_value_scale(model_path, make_raster, tmp_path) -> None:
    # fp32: the rescale itself is under test; bf16 rounds the network's inputs to 8 significant bits, which turns the
    # float32 rounding differences of the two rescales into label flips on this network's many near-ties
    run = functools.partial(globals()["run"], precision="fp32")
    data8 = potsdam_pixels(80, 90)
    ref = run(model_path, make_raster("b8.tif", data8), str(tmp_path / "b8_out.tif"))
    data16 = data8.astype(np.uint16) * 257  # 0..255 -> 0..65535
    labels = run(model_path, make_raster("b16.tif", data16), str(tmp_path / "b16_out.tif"), value_max=65535)
    assert (labels == ref).mean() > 0.999  # float32 rounding of the rescale may flip a rare tie
    # a model trained on 0..10000 (e.g. reflectance) reads a 16-bit raster in those units without --value-max
    model10k = make_model_file(str(tmp_path / "m10k.rspmodel"), value_range=(0.0, 10000.0))
    data10k = np.round(data8.astype(np.float64) * 10000 / 255).astype(np.uint16)
    labels = run(model10k, make_raster("r.tif", data10k), str(tmp_path / "r_out.tif"))
    assert (labels == ref).mean() > 0.999


def test_epsg4326_and_gsd_resampling(make_raster, tmp_path) -> None:
    model = make_model_file(str(tmp_path / "gsd.rspmodel"), gsd_m=1.0)
    # At 60°N a degree of longitude is half a degree of latitude on the ground: pixels of 2e-5° × 1e-5° are about
    # 1.11 m × 1.11 m, so the model (1 m) reads them resampled to square metres.
    raster = make_raster("geo.tif", potsdam_pixels(100, 80), epsg=4326, origin=(10.0, 60.0), pixel=(2e-5, 1e-5))
    out = str(tmp_path / "geo_out.tif")
    result = predict(PredictRequest(model=model, input=raster, output=out))
    ds = gdal.Open(out)
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 100)  # on the source grid
    assert ds.GetGeoTransform() == pytest.approx(gdal.Open(raster).GetGeoTransform())
    assert read(out).max() < NUM_CLASSES
    # total area against PROJ's ellipsoidal Lambert azimuthal equal-area projection of the footprint
    wgs84, laea = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    laea.SetLAEA(60.0, 10.0008, 0, 0)
    for s in (wgs84, laea):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    footprint = ogr.CreateGeometryFromWkt("POLYGON((10 60, 10.0016 60, 10.0016 59.999, 10 59.999, 10 60))")
    footprint.Segmentize(1e-5)
    footprint.Transform(osr.CoordinateTransformation(wgs84, laea))
    expected = footprint.GetArea()  # about 9947 m²; a constant 111 km/degree would say 17760 m²
    total = sum(c["area_m2"] for c in result.classes)
    assert total == pytest.approx(expected, rel=1e-4)
    assert sum(c["pixels"] for c in result.classes) == 8000
    # projected raster at 0.5 m with a 1 m model equals running on the raster downsampled by hand to 1 m
    fine = make_raster("fine.tif", potsdam_pixels(128, 128), pixel=(0.5, 0.5))
    labels = run(model, fine, str(tmp_path / "fine_out.tif"))
    coarse = str(tmp_path / "coarse.tif")
    gdal.Warp(coarse, fine, xRes=1.0, yRes=1.0, resampleAlg="average", dstAlpha=True)
    coarse_labels = run(model, coarse, str(tmp_path / "coarse_out.tif"), bands=(1, 2, 3))
    upsampled = np.repeat(np.repeat(coarse_labels, 2, axis=0), 2, axis=1)
    assert labels.shape == (128, 128) and (labels == upsampled).mean() > 0.99
    # shift invariance holds through the resampling too (odd offsets: half work pixels)
    part = run(model, fine, str(tmp_path / "fine_part.tif"), window=(33, 17, 51, 70), blend="reference")
    whole_ref = run(model, fine, str(tmp_path / "fine_ref.tif"), blend="reference")
    np.testing.assert_array_equal(part, whole_ref[17:87, 33:84])


def test_mask_polygons(model_path, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(120, 120), origin=(500000.0, 5800000.0), pixel=(1.0, 1.0))
    whole = run(model_path, raster, str(tmp_path / "whole.tif"))
    gpkg = str(tmp_path / "mask.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg)
    layer = ds.CreateLayer("m", srs=srs, geom_type=ogr.wkbPolygon)
    feat = ogr.Feature(layer.GetLayerDefn())
    # a 30 × 20 m rectangle: columns 70..100, rows 10..30
    feat.SetGeometry(ogr.CreateGeometryFromWkt(
        "POLYGON((500070 5799990, 500100 5799990, 500100 5799970, 500070 5799970, 500070 5799990))"))  # fmt: skip
    layer.CreateFeature(feat)
    ds = None
    labels = run(model_path, raster, str(tmp_path / "masked.tif"), mask=gpkg)
    assert labels.shape == (20, 30)
    np.testing.assert_array_equal(labels, whole[10:30, 70:100])


def test_band_mapping(model_path, make_raster, tmp_path) -> None:
    data = potsdam_pixels(50, 50)
    two = make_raster("two.tif", data[:2], interp=False)
    with pytest.raises(BandMismatchError, match="bands"):
        run(model_path, two, str(tmp_path / "o.tif"))
    # bands in BGR order, labelled by colour interpretation, are mapped back to RGB
    bgr = make_raster("bgr.tif", data[::-1].copy(), interp=False)
    ds = gdal.Open(bgr, gdal.GA_Update)
    for i, ci in enumerate((gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand)):
        ds.GetRasterBand(i + 1).SetColorInterpretation(ci)
    ds = None
    rgb = run(model_path, make_raster("rgb.tif", data), str(tmp_path / "rgb_out.tif"))
    np.testing.assert_array_equal(run(model_path, bgr, str(tmp_path / "bgr_out.tif")), rgb)
    np.testing.assert_array_equal(run(model_path, bgr, str(tmp_path / "b2.tif"), bands=(3, 2, 1)), rgb)


def test_existing_output_refused_and_cancel_leaves_nothing(model_path, make_raster, tmp_path) -> None:
    raster = make_raster("in.tif", potsdam_pixels(200, 200))
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputPathError, match="--overwrite"):
        run(model_path, raster, str(out))
    assert out.read_bytes() == b"keep me"
    cancel = threading.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "progress":
            cancel.set()

    before = set(os.listdir(tmp_path))
    with pytest.raises(CancelledError):
        predict(PredictRequest(model=model_path, input=raster, output=str(tmp_path / "new.tif"),
                               vector=str(tmp_path / "new.gpkg"), confidence=str(tmp_path / "c.tif"), batch_size=1),
                on_event=on_event, cancel=cancel)  # fmt: skip
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(("h", "w"), [(100, 80), (40, 96)])
def test_slide_inference_reference_equals_mmseg(model_path, h, w) -> None:
    model, _ = load_model_file(model_path)
    img = torch.from_numpy((potsdam_pixels(h, w).astype(np.float32) - 120) / 58)[None]
    with torch.no_grad():
        expected = mmseg_slide(model, img, NUM_CLASSES, TILE, 48)  # bench.baseline: written out independently
    got = slide_inference(model, img, TILE, 48, NUM_CLASSES, blend="reference")
    assert got.shape == (1, NUM_CLASSES, h, w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    smooth = slide_inference(model, img, TILE, 48, NUM_CLASSES, blend="smooth")
    torch.testing.assert_close(smooth.sum(1), torch.ones(1, h, w), rtol=1e-5, atol=1e-5)


def test_default_fast_head_and_exact_agree_on_a_wide_head(make_raster, tmp_path) -> None:
    """RSP-R50 (512-wide head): the engine's default uses the low-resolution head fusion, ``exact`` the reference
    float order; their labels agree on real pixels and ``exact`` equals the reference-order slide inference."""
    from engine.model_file import ModelInfo, save_model_file
    from engine.models import build_segmentor

    torch.manual_seed(0)
    net = build_segmentor("rsp_resnet50", NUM_CLASSES, aux_head=False)
    info = ModelInfo(arch="rsp_resnet50", num_classes=NUM_CLASSES, class_names=("a", "b", "c"),
                     colors=((0, 0, 0), (9, 9, 9), (99, 99, 99)), tile_size=64, stride=48)  # fmt: skip
    model = save_model_file(str(tmp_path / "r50.rspmodel"), net.state_dict(), info) or str(tmp_path / "r50.rspmodel")
    raster = make_raster("in.tif", potsdam_pixels(96, 112))
    exact = run(model, raster, str(tmp_path / "exact.tif"), exact=True, confidence=str(tmp_path / "exact_p.tif"))
    # fp32: the head fusion's rounding is under test (the default precision may be bf16 on this CPU)
    fast = run(model, raster, str(tmp_path / "fast.tif"), confidence=str(tmp_path / "fast_p.tif"), precision="fp32")
    assert (exact == fast).mean() > 0.999
    p_exact, p_fast = read(str(tmp_path / "exact_p.tif")), read(str(tmp_path / "fast_p.tif"))
    assert not np.array_equal(p_exact, p_fast)  # the two paths really differ in rounding ...
    np.testing.assert_allclose(p_fast, p_exact, atol=1e-4)  # ... and only in rounding
    loaded, _ = load_model_file(model)
    x = (
        torch.from_numpy(potsdam_pixels(96, 112)).float()[None] - torch.tensor(info.mean)[:, None, None]
    ) / torch.tensor(info.std)[:, None, None]
    with torch.inference_mode():
        logits = slide_inference(loaded, x, tile=64, stride=48, num_classes=NUM_CLASSES, blend="smooth")
    assert (logits.argmax(1)[0].numpy() == exact).mean() > 0.999


def test_gdal_cache_is_bounded_during_a_run_and_restored(model_path, make_raster, tmp_path, monkeypatch) -> None:
    """GDAL's default cache (5 % of RAM) would let memory grow with the raster's area; runs cap it, then restore."""
    from engine.raster_io import GDAL_CACHE_BYTES

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(4 * GDAL_CACHE_BYTES)
    seen: list[int] = []
    raster = make_raster("in.tif", potsdam_pixels(64, 64))
    try:
        predict(PredictRequest(model=model_path, input=raster, output=str(tmp_path / "o.tif")),
                on_event=lambda e: seen.append(gdal.GetCacheMax()))  # fmt: skip
        assert seen and max(seen) == GDAL_CACHE_BYTES
        assert gdal.GetCacheMax() == 4 * GDAL_CACHE_BYTES
    finally:
        gdal.SetCacheMax(before)
