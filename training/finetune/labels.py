"""Reference labels on a raster grid: polygons with a class field (any OGR format, any CRS) or a class raster.

Rules (where the issue is silent):

- **Polygons**: every polygon feature of the file's first layer (or of ``path|layername=NAME``) whose field
  ``class_field`` is set; reprojected to the grid's CRS; a pixel is labelled when its centre lies inside a polygon
  (GDAL's rasterisation rule, holes honoured: the same rule as the engine's ``--mask``). Where polygons of different
  classes overlap, the one later in the file wins. Pixels outside every polygon are *unlabelled* (:data:`IGNORE`),
  never a background class.
- **Class raster**: a single-band raster on any grid, warped onto the grid with nearest neighbour. Its nodata value
  is unlabelled; every other value is a label value, named by the raster's category names when it has them (as the
  engine's outputs do), else by the number itself.
- Label values become class ids through a :class:`~training.finetune.classes.ClassTable`; values it does not list
  are unlabelled.
"""

from __future__ import annotations

import math
import os

import numpy as np
from osgeo import gdal, ogr

from engine.errors import ParameterError
from engine.georef import get_srs
from engine.masks import polygon_features, window_grid
from engine.tiling import Window
from training.finetune.classes import IGNORE, ClassTable, value_key

gdal.UseExceptions()
ogr.UseExceptions()

RASTER_CHUNK_ROWS = 1024  # rows of a class raster read at a time when listing its values


class LabelError(ParameterError):
    """Labels cannot be read or do not fit the raster; the message says what to fix."""

    hint = "check --labels and --class-field (a polygon layer with a class field, or a single-band class raster)"


def is_vector(path: str) -> bool:
    """Whether ``path`` opens as vector data (else it is treated as a class raster)."""
    base = path.split("|", 1)[0]
    try:
        ds = gdal.OpenEx(base, gdal.OF_VECTOR)
    except RuntimeError:
        return False
    return ds is not None and ds.GetLayerCount() > 0


class LabelSource:
    """Labels from ``path``; ``class_field`` is required for polygons and ignored for a class raster."""

    def __init__(self, path: str, class_field: str | None = None) -> None:
        self.path = path
        base = path.split("|", 1)[0]
        if not os.path.exists(base) and not base.startswith("/vsi"):
            raise LabelError(f"labels not found: {base}")
        self.vector = is_vector(path)
        self.class_field = class_field
        self._layers: dict[str, tuple[ogr.DataSource, ogr.Layer]] = {}  # per grid CRS: cid-burnable copy
        if self.vector:
            self._src, self._layer = self._open_layer()
            if not class_field:
                raise LabelError(f"--class-field is needed for polygon labels; fields of {path}: {self.fields()}")
            if self._layer.GetLayerDefn().GetFieldIndex(class_field) < 0:
                raise LabelError(
                    f"{path} has no field {class_field!r}; its fields: {', '.join(self.fields()) or 'none'}",
                    "pass --class-field with one of the fields listed",
                )
        else:
            try:
                self._raster = gdal.Open(base)
            except RuntimeError as exc:
                raise LabelError(f"GDAL cannot read labels {base} as vector or raster: {exc}") from exc
            if self._raster.RasterCount != 1:
                raise LabelError(
                    f"class raster {base} has {self._raster.RasterCount} bands; labels need one band of class values"
                )
            band = self._raster.GetRasterBand(1)
            if gdal.DataTypeIsComplex(band.DataType) or band.DataType in (gdal.GDT_Float32, gdal.GDT_Float64):
                raise LabelError(f"class raster {base} holds non-integer values; classes must be integer codes")

    # ------------------------------------------------------------------------------------------------- reading
    def _open_layer(self) -> tuple[ogr.DataSource, ogr.Layer]:
        base, name = split_layer_path(self.path)
        try:
            src = ogr.Open(base)
        except RuntimeError as exc:
            raise LabelError(f"cannot open labels {base}: {exc}") from exc
        layer = src.GetLayerByName(name) if name else src.GetLayer(0)
        if layer is None:
            raise LabelError(f"{base} has no layer {name!r}")
        return src, layer

    def fields(self) -> list[str]:
        """Attribute field names of the polygon layer."""
        defn = self._layer.GetLayerDefn()
        return [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]

    def _category_names(self) -> list[str]:
        return category_names(self._raster)

    def values(self) -> dict[str, int]:
        """Label value → polygon count (vector) or pixel count (raster), over the whole file."""
        counts: dict[str, int] = {}
        if self.vector:
            for feat, _ in polygon_features(self._layer, None):
                if feat.IsFieldSetAndNotNull(self.class_field):
                    key = value_key(feat.GetField(self.class_field))
                    if key:
                        counts[key] = counts.get(key, 0) + 1
            return counts
        band = self._raster.GetRasterBand(1)
        nodata = band.GetNoDataValue()
        cats = self._category_names()
        hist: dict[int, int] = {}
        for y in range(0, self._raster.RasterYSize, RASTER_CHUNK_ROWS):
            h = min(RASTER_CHUNK_ROWS, self._raster.RasterYSize - y)
            vals, n = np.unique(band.ReadAsArray(0, y, self._raster.RasterXSize, h), return_counts=True)
            for v, c in zip(vals.tolist(), n.tolist(), strict=True):
                if nodata is None or v != nodata:
                    hist[v] = hist.get(v, 0) + c
        for v, c in hist.items():
            counts[self._raster_key(v, cats)] = c
        return counts

    @staticmethod
    def _raster_key(v: int, cats: list[str]) -> str:
        return value_key(cats[v]) if 0 <= v < len(cats) and cats[v].strip() else value_key(v)

    # ------------------------------------------------------------------------------------------------- extent
    def pixel_extent(self, grid: gdal.Dataset) -> Window | None:
        """Pixels of ``grid`` that the labels' bounding box covers (clipped to the grid); None when disjoint."""
        if self.vector:
            layer = self._burnable(grid, None)
            if layer.GetFeatureCount() == 0:
                return None
            xmin, xmax, ymin, ymax = layer.GetExtent()
        else:
            gt = self._raster.GetGeoTransform()
            xs = [
                gt[0] + gt[1] * c + gt[2] * r
                for c in (0, self._raster.RasterXSize)
                for r in (0, self._raster.RasterYSize)
            ]
            ys = [
                gt[3] + gt[4] * c + gt[5] * r
                for c in (0, self._raster.RasterXSize)
                for r in (0, self._raster.RasterYSize)
            ]
            xmin, xmax, ymin, ymax = _reproject_box(self._raster, grid, min(xs), max(xs), min(ys), max(ys))
        inv = gdal.InvGeoTransform(grid.GetGeoTransform())
        pts = [gdal.ApplyGeoTransform(inv, x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
        c0 = max(math.floor(min(p[0] for p in pts)), 0)
        c1 = min(math.ceil(max(p[0] for p in pts)), grid.RasterXSize)
        r0 = max(math.floor(min(p[1] for p in pts)), 0)
        r1 = min(math.ceil(max(p[1] for p in pts)), grid.RasterYSize)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    # ------------------------------------------------------------------------------------------------- burning
    def _burnable(self, grid: gdal.Dataset, table: ClassTable | None) -> ogr.Layer:
        """The polygons in ``grid``'s CRS with an integer field ``cid`` (class id; -1 when not a class)."""
        key = (grid.GetProjection() or "") + "|" + (repr(sorted(table.codes.items())) if table else "")
        if key not in self._layers:
            srs = get_srs(grid)
            mem = ogr.GetDriverByName("Memory").CreateDataSource("labels")
            out = mem.CreateLayer("labels", srs=srs, geom_type=ogr.wkbMultiPolygon)
            out.CreateField(ogr.FieldDefn("cid", ogr.OFTInteger))
            defn = out.GetLayerDefn()
            for feat, geom in polygon_features(self._layer, srs):
                if not feat.IsFieldSetAndNotNull(self.class_field):
                    continue
                cid = table.class_of(feat.GetField(self.class_field)) if table else 0
                f = ogr.Feature(defn)
                f.SetGeometry(geom)
                f.SetField("cid", -1 if cid is None else cid)
                out.CreateFeature(f)
            self._layers[key] = (mem, out)
        return self._layers[key][1]

    def burn(self, grid: gdal.Dataset, win: Window, table: ClassTable) -> np.ndarray:
        """``(h, w)`` uint8 class ids of ``win`` on ``grid``'s pixel grid; :data:`IGNORE` where unlabelled."""
        if self.vector:
            layer = self._burnable(grid, table)
            layer.SetAttributeFilter("cid >= 0")
            mem = window_grid(grid, win, gdal.GDT_Int16, IGNORE)
            gdal.RasterizeLayer(mem, [1], layer, options=["ATTRIBUTE=cid"])
            layer.SetAttributeFilter(None)
            return mem.GetRasterBand(1).ReadAsArray().astype(np.uint8)
        band = self._raster.GetRasterBand(1)
        nodata = band.GetNoDataValue()
        mem = window_grid(grid, win, gdal.GDT_Int32, -1)
        mem.GetRasterBand(1).SetNoDataValue(-1)
        gdal.Warp(mem, self._raster, resampleAlg="near", srcNodata=nodata, dstNodata=-1, multithread=False)
        raw = mem.GetRasterBand(1).ReadAsArray()
        cats = self._category_names()
        out = np.full(raw.shape, IGNORE, np.uint8)
        for v in np.unique(raw).tolist():
            if v == -1:
                continue
            cid = table.class_of(self._raster_key(v, cats))
            if cid is not None:
                out[raw == v] = cid
        return out


def category_names(ds: gdal.Dataset) -> list[str]:
    """Band 1's category names (from the file or its ``.aux.xml``), or its ``CLASS_NAMES`` item; [] without."""
    ds.GetGeoTransform()  # GDAL 3.6's GTiff loads the .aux.xml lazily: without this call the names read as None
    band = ds.GetRasterBand(1)
    names = list(band.GetCategoryNames() or [])
    if not names and band.GetMetadataItem("CLASS_NAMES"):
        names = band.GetMetadataItem("CLASS_NAMES").split(",")
    return names


def _reproject_box(
    src: gdal.Dataset, dst: gdal.Dataset, xmin: float, xmax: float, ymin: float, ymax: float
) -> tuple[float, float, float, float]:
    """The box in ``dst``'s CRS enclosing ``src``'s box (edges densified)."""
    from osgeo import osr

    s, d = get_srs(src), get_srs(dst)
    if s is None or d is None or s.IsSame(d):
        return xmin, xmax, ymin, ymax
    ct = osr.CoordinateTransformation(s, d)
    pts = [(xmin + (xmax - xmin) * t / 20, y) for t in range(21) for y in (ymin, ymax)]
    pts += [(x, ymin + (ymax - ymin) * t / 20) for t in range(21) for x in (xmin, xmax)]
    out = [ct.TransformPoint(x, y)[:2] for x, y in pts]
    return min(p[0] for p in out), max(p[0] for p in out), min(p[1] for p in out), max(p[1] for p in out)


def split_layer_path(path: str) -> tuple[str, str | None]:
    """``(file, layer name or None)`` of a QGIS-style ``file|layername=NAME`` source (a plain path: no layer)."""
    base, _, opts = path.partition("|")
    return base, (opts.split("layername=", 1)[1].split("|")[0] if "layername=" in opts else None)
