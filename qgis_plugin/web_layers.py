"""Web raster layers (XYZ/TMS tiles, WMS) → a GDAL service description the engine reads for the chosen extent.

A layer of QGIS's ``wms`` provider has no file behind it. For the chosen extent and GSD this module writes the
matching GDAL description (:mod:`engine.web_tiles`, standard library only) and says how much it downloads, so the
dialog and Processing can show the pixel size and raster size and refuse an unreasonable download.

Decisions (where the issue is silent):

- **XYZ/TMS**: read at the coarsest zoom level whose ground pixel at the extent's latitude is at most the GSD used
  (the model's, or the metres chosen; the layer's finest level for "native"), within the layer's zoom range; the
  engine gets ``--bbox`` in EPSG:3857 and resamples to the GSD.
- **WMS**: the description's data window is the extent in the layer's CRS, at the GSD used (the server resamples);
  "native" is refused (a WMS has no resolution of its own). A layer CRS without an authority code (a custom CRS)
  cannot be written into the description and is refused.
- **WMTS**: not supported yet (refused with what to do instead).
- **Size**: more than ``max_web_megapixels`` (plugin setting, default :data:`DEFAULT_MAX_WEB_MEGAPIXELS`) pixels
  to download is refused with the number.
- **Outputs** of a web layer default to the project's folder, named after the layer (never a temporary folder); an
  unsaved project has no folder, so the analyst must choose the output paths.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsUnitTypes

from . import plugin_settings
from .engine_locator import ensure_engine_importable
from .parameters import default_output_paths

BBox = tuple[float, float, float, float]
DEFAULT_MAX_WEB_MEGAPIXELS = 100  # ≈ 1500 tiles of 256²: minutes to an hour of downloads
METRES_PER_DEGREE = 111319.49  # on the equator; a WMS in degrees is sized with cos(latitude) east-west
XML_NAME = "web_layer.xml"


class WebLayerProblem(Exception):
    """The web layer cannot be read for this extent; the message says why and what to do."""


def is_web_layer(layer: Any) -> bool:
    """Whether ``layer`` is a raster layer of QGIS's ``wms`` provider (XYZ, TMS, WMS or WMTS)."""
    return isinstance(layer, QgsRasterLayer) and layer.providerType() == "wms"


def layer_uri(layer: QgsRasterLayer) -> dict[str, str]:
    """The layer's data source as ``{key: value}``; repeated keys (``layers``, ``styles``) joined with commas."""
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(layer.source(), keep_blank_values=True):
        values.setdefault(key, []).append(value)
    return {key: ",".join(v) for key, v in values.items()}


def max_web_pixels() -> int:
    """The largest download allowed (pixels), from the plugin settings."""
    return int(float(plugin_settings.get_value("max_web_megapixels", DEFAULT_MAX_WEB_MEGAPIXELS)) * 1_000_000)


@dataclass(frozen=True)
class WebRequest:
    """What reading a web layer for one extent means.

    Attributes:
        xml: the GDAL service description.
        bbox: ``--bbox`` for the engine (XYZ: the extent in EPSG:3857), or None (WMS: the description is the extent).
        width, height: pixels downloaded.
        pixel_m: their ground size in metres.
        zoom: the XYZ level (None for WMS).
    """

    xml: str
    bbox: BBox | None
    width: int
    height: int
    pixel_m: float
    zoom: int | None = None

    @property
    def pixels(self) -> int:
        """Pixels downloaded."""
        return self.width * self.height

    def summary(self) -> str:
        """One line for the dialog, e.g. ``"Downloads 1536 × 1024 px at 0.81 m/px (zoom 17, about 24 tiles)"``."""
        if self.zoom is not None:
            tiles = (math.ceil(self.width / 256) + 1) * (math.ceil(self.height / 256) + 1)
            where = f"zoom {self.zoom}, about {tiles} tiles"
        else:
            where = "WMS GetMap in 256-px blocks"
        return f"Downloads {self.width} × {self.height} px at {self.pixel_m:.3g} m/px ({where})"

    def size_problem(self, limit: int) -> str:
        """A message when more than ``limit`` pixels would be downloaded, else ``""``."""
        if self.pixels <= limit:
            return ""
        return (
            f"The extent is {self.width} × {self.height} = {self.pixels / 1e6:.0f} million pixels at "
            f"{self.pixel_m:.3g} m/px, more than the {limit / 1e6:.0f} million allowed: zoom in (canvas extent), "
            "choose a larger GSD, or raise the limit in the plugin settings."
        )


def web_request(layer: QgsRasterLayer, bbox: BBox, gsd_m: float | None) -> WebRequest:
    """The description and size of reading ``layer`` over ``bbox`` (layer CRS) at ``gsd_m`` (None: native).

    Raises:
        WebLayerProblem: WMTS, a CRS that cannot be written, "native" for a WMS, a bad tile URL.
    """
    ensure_engine_importable()
    from engine import web_tiles

    uri = layer_uri(layer)
    if uri.get("type") == "xyz":
        url = uri.get("url", "")
        zmin, zmax = int(uri.get("zmin") or 0), int(uri.get("zmax") or web_tiles.MAX_ZOOM)
        lat = web_tiles.mercator_latitude((bbox[1] + bbox[3]) / 2)
        zoom = zmax if gsd_m is None else web_tiles.zoom_for_gsd(gsd_m, lat, zmin, zmax)
        try:
            xml = web_tiles.xyz_service_xml(url, zoom)
        except web_tiles.WebLayerError as exc:
            raise WebLayerProblem(f"Layer '{layer.name()}': {exc}.") from exc
        width, height = web_tiles.extent_pixels(bbox, zoom)
        return WebRequest(xml, bbox, width, height, web_tiles.ground_resolution(zoom, lat), zoom)
    if "tileMatrixSet" in uri:
        raise WebLayerProblem(
            f"Layer '{layer.name()}' is a WMTS layer, which cannot be segmented yet: add the same imagery as an XYZ "
            "layer (its tile URL) or a WMS layer, or export the extent to a GeoTIFF (Export > Save As…)."
        )
    crs = layer.crs()
    authid = crs.authid()
    if not authid or not QgsCoordinateReferenceSystem(authid).isValid():
        raise WebLayerProblem(
            f"Layer '{layer.name()}' uses a CRS without an authority code ({crs.description() or 'unknown'}), "
            "which a GDAL WMS description cannot name: choose an EPSG CRS for the layer (Layer Properties > Source)."
        )
    if gsd_m is None:
        raise WebLayerProblem(
            f"Layer '{layer.name()}' is a WMS layer, which has no resolution of its own: choose the model's GSD or a "
            "GSD in metres."
        )
    sx, sy = _gsd_in_crs_units(crs, gsd_m, (bbox[1] + bbox[3]) / 2)
    width = max(1, math.ceil((bbox[2] - bbox[0]) / sx))
    height = max(1, math.ceil((bbox[3] - bbox[1]) / sy))
    snapped = (bbox[0], bbox[3] - height * sy, bbox[0] + width * sx, bbox[3])  # whole pixels of the GSD
    xml = web_tiles.wms_service_xml(
        uri.get("url", ""),
        uri.get("layers", ""),
        authid,
        snapped,
        (width, height),
        image_format=uri.get("format") or "image/png",
        styles=uri.get("styles", ""),
    )
    return WebRequest(xml, None, width, height, gsd_m)


def _gsd_in_crs_units(crs: QgsCoordinateReferenceSystem, gsd_m: float, y: float) -> tuple[float, float]:
    if crs.isGeographic():
        return gsd_m / (METRES_PER_DEGREE * math.cos(math.radians(y))), gsd_m / METRES_PER_DEGREE
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters)
    return gsd_m / factor, gsd_m / factor


def write_description(request: WebRequest, folder: str) -> str:
    """Write ``request.xml`` as ``folder/web_layer.xml``; its path (the engine's ``--input``)."""
    path = os.path.join(folder, XML_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(request.xml)
    return path


def checked_web_request(layer: QgsRasterLayer, bbox: BBox, gsd_m: float | None) -> WebRequest:
    """:func:`web_request` for ``bbox`` at ``gsd_m``, refused when it would download more than :func:`max_web_pixels`.

    The one check the Segment dialog and the Processing algorithm share before writing a service description.

    Raises:
        WebLayerProblem: the layer cannot be read this way, or the request is too large (the message says why).
    """
    request = web_request(layer, bbox, gsd_m)
    too_large = request.size_problem(max_web_pixels())
    if too_large:
        raise WebLayerProblem(too_large)
    return request


def default_web_outputs(layer: QgsRasterLayer, model_path: str) -> dict[str, str]:
    """Default outputs of a web layer: the project's folder, named after the layer; ``{}`` for an unsaved project."""
    home = QgsProject.instance().homePath()
    if not home or not os.path.isdir(home):
        return {}
    return default_output_paths(os.path.join(home, f"{layer.name()}.web"), model_path)
