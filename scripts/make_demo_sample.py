"""Build the bundled sample rasters in ``resources/samples/`` from the team's real sample data (run once, by hand).

Usage::

    .venv/bin/python scripts/make_demo_sample.py --source ../shared/data/potsdam --out resources/samples

Writes two GeoTIFFs of ISPRS Potsdam tile 2_10, top-left 512×512 crop (RGB, 5 cm):

- ``potsdam_2_10_rgb.tif``: 3 bands uint8, colour interpretation red/green/blue, DEFLATE.
- ``potsdam_2_10_labels.tif``: 1 band uint8 ground truth, class ids of the demo model (0 impervious surface,
  1 building, 2 low vegetation, 3 tree, 4 car, 5 clutter), 255 = eroded class boundary (nodata), with a colour table.

The source PNGs carry no georeferencing. Decision: both rasters get an *assigned* north-up geotransform in
EPSG:32633 (WGS 84 / UTM 33N) with 0.05 m pixels (the data set's true GSD, so the engine does not resample) and the
top-left corner near the centre of Potsdam, rounded to whole metres. The position is not the tile's true position;
the ``GEOREFERENCING`` metadata item of each raster and ``resources/samples/SOURCES.md`` say so.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from osgeo import gdal, osr
from PIL import Image

gdal.UseExceptions()

SOURCE_RGB = "2_10_0_0_512_512_rgb.png"
SOURCE_LABELS = "2_10_0_0_512_512_label_6cls_ignore255_DERIVED.png"
OUT_RGB = "potsdam_2_10_rgb.tif"
OUT_LABELS = "potsdam_2_10_labels.tif"
EPSG = 32633  # WGS 84 / UTM zone 33N, the UTM zone of Potsdam
POTSDAM_LAT_LON = (52.3906, 13.0645)  # approximate city centre (degrees)
GSD_M = 0.05
NODATA_LABEL = 255
CLASS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
ATTRIBUTION = (
    "ISPRS 2D Semantic Labeling benchmark, Potsdam tile 2_10 (top-left 512x512 crop, RGB, 5 cm), via "
    "open-mmlab/mmsegmentation test data (commit 634fbce); research use with citation"
)
GEOREFERENCING = (
    f"assigned, not true: EPSG:{EPSG}, {GSD_M} m pixels, top-left corner placed near the centre of Potsdam; "
    "the source PNG has no georeferencing"
)


def assigned_geotransform() -> tuple[float, float, float, float, float, float]:
    """GDAL geotransform (x0, dx, 0, y0, 0, -dy) in EPSG:32633 metres, origin rounded to whole metres."""
    wgs84, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    utm.ImportFromEPSG(EPSG)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y, _ = osr.CoordinateTransformation(wgs84, utm).TransformPoint(POTSDAM_LAT_LON[1], POTSDAM_LAT_LON[0])
    return (float(round(x)), GSD_M, 0.0, float(round(y)), 0.0, -GSD_M)


def _create(path: str, array: np.ndarray, photometric: str) -> gdal.Dataset:
    """A DEFLATE GeoTIFF of ``array`` ((H, W, C) or (H, W) uint8) with the assigned georeferencing."""
    bands = 1 if array.ndim == 2 else array.shape[2]
    options = ["COMPRESS=DEFLATE", "PREDICTOR=2", "TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
    if photometric:
        options.append(f"PHOTOMETRIC={photometric}")
    ds = gdal.GetDriverByName("GTiff").Create(path, array.shape[1], array.shape[0], bands, gdal.GDT_Byte, options)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform(assigned_geotransform())
    ds.SetMetadata({"GEOREFERENCING": GEOREFERENCING, "ATTRIBUTION": ATTRIBUTION, "SOURCE": "ISPRS Potsdam 2_10"})
    for b in range(bands):
        ds.GetRasterBand(b + 1).WriteArray(array if array.ndim == 2 else array[:, :, b])
    return ds


def build(source: str, out: str) -> None:
    """Write :data:`OUT_RGB` and :data:`OUT_LABELS` into ``out`` from the PNGs in ``source``."""
    os.makedirs(out, exist_ok=True)
    with Image.open(os.path.join(source, SOURCE_RGB)) as im:
        rgb = np.array(im.convert("RGB"))  # (H, W, 3) uint8
    with Image.open(os.path.join(source, SOURCE_LABELS)) as im:
        labels = np.array(im).astype(np.uint8)  # (H, W), 0..5, 255 boundary
    ds = _create(os.path.join(out, OUT_RGB), rgb, "RGB")
    for i, ci in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)):
        ds.GetRasterBand(i + 1).SetColorInterpretation(ci)
    ds = None
    ds = _create(os.path.join(out, OUT_LABELS), labels, "")
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(NODATA_LABEL)
    table = gdal.ColorTable()
    for i, color in enumerate(CLASS_COLORS):
        table.SetColorEntry(i, (*color, 255))
    table.SetColorEntry(NODATA_LABEL, (0, 0, 0, 0))
    band.SetColorTable(table)
    band.SetDescription("ground truth: 0 impervious, 1 building, 2 low veg, 3 tree, 4 car, 5 clutter; 255 boundary")
    ds = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="../shared/data/potsdam", help="folder with the Potsdam sample PNGs")
    parser.add_argument("--out", default="resources/samples")
    args = parser.parse_args()
    build(args.source, args.out)
    print(f"wrote {os.path.join(args.out, OUT_RGB)} and {os.path.join(args.out, OUT_LABELS)}")


if __name__ == "__main__":
    main()
