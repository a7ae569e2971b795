"""GDAL service descriptions for web basemaps (XYZ/TMS tiles, WMS), and the tile-grid arithmetic to size a request.

Standard library only: the QGIS plugin imports this module in QGIS's own Python to write the description of the
layer the analyst picked, which the engine then reads like any raster (:mod:`engine.sources`).

Decisions (where the issue is silent):

- **XYZ/TMS**: the description covers the whole Web Mercator world (EPSG:3857) at one zoom level, as GDAL's TMS
  minidriver expects; the engine reads only the requested ``--bbox`` of it. The zoom is the coarsest level whose
  ground pixel at the extent's latitude is at most the GSD wanted (:func:`zoom_for_gsd`), within the layer's zoom
  range, so the model never reads upsampled pixels when the service has them; the engine then resamples to that GSD.
- **WMS**: the description's data window is the chosen extent in the layer's CRS, sized at the chosen GSD (the
  server resamples), requested in 256² blocks.
- **Missing tiles**: four bands (RGB + alpha) and HTTP 204/404 as empty blocks, so tiles outside the service's
  coverage are transparent (nodata in the outputs, with a warning); other HTTP errors stop the run.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WEB_MERCATOR_HALF = 20037508.342789244  # metres: half the EPSG:3857 world width
TILE_SIZE = 256
MAX_ZOOM = 23
MISSING_TILE_CODES = (204, 404)  # answers meaning "no tile here": transparent, not an error
MAX_CONNECTIONS = 4  # parallel tile downloads (GDAL's default is 2); polite to public servers


class WebLayerError(ValueError):
    """A web layer's source cannot be written as a GDAL service description; the message says why and what to do."""


def xyz_resolution(zoom: int, tile_size: int = TILE_SIZE) -> float:
    """EPSG:3857 metres per pixel at ``zoom`` (ground metres at the equator)."""
    return 2 * WEB_MERCATOR_HALF / tile_size / 2**zoom


def mercator_latitude(y: float) -> float:
    """Latitude (degrees) of the EPSG:3857 northing ``y``."""
    return math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)


def ground_resolution(zoom: int, lat_deg: float, tile_size: int = TILE_SIZE) -> float:
    """Ground metres per pixel at ``zoom`` and latitude ``lat_deg`` (Web Mercator's scale is 1/cos(lat))."""
    return xyz_resolution(zoom, tile_size) * math.cos(math.radians(lat_deg))


def zoom_for_gsd(gsd_m: float, lat_deg: float, zmin: int = 0, zmax: int = MAX_ZOOM, tile_size: int = TILE_SIZE) -> int:
    """The coarsest zoom in ``zmin..zmax`` whose ground pixel at ``lat_deg`` is at most ``gsd_m`` (else ``zmax``)."""
    for zoom in range(zmin, zmax + 1):
        if ground_resolution(zoom, lat_deg, tile_size) <= gsd_m * 1.0001:
            return zoom
    return zmax


def extent_pixels(
    bbox_3857: tuple[float, float, float, float], zoom: int, tile_size: int = TILE_SIZE
) -> tuple[int, int]:
    """``(width, height)`` in pixels of an EPSG:3857 box at ``zoom``."""
    res = xyz_resolution(zoom, tile_size)
    xmin, ymin, xmax, ymax = bbox_3857
    return max(1, math.ceil((xmax - xmin) / res)), max(1, math.ceil((ymax - ymin) / res))


def gdal_tile_url(template: str) -> tuple[str, bool]:
    """A QGIS/XYZ URL template (``{x}``, ``{y}`` or ``{-y}``, ``{z}``) as GDAL's TMS template.

    Returns:
        ``(url, top)``: the ``${x}``/``${y}``/``${z}`` URL and whether rows count from the top (XYZ; False for TMS's
        ``{-y}``).

    Raises:
        WebLayerError: the template lacks ``{x}``, ``{y}`` and ``{z}``, or uses quadkeys (``{q}``).
    """
    if "{q}" in template:
        raise WebLayerError("quadkey tile URLs ({q}) are not supported: use the service's {x}/{y}/{z} URL")
    top = "{-y}" not in template
    url = template.replace("{-y}", "{y}")
    if not all(key in url for key in ("{x}", "{y}", "{z}")):
        raise WebLayerError(f"the tile URL {template!r} lacks {{x}}, {{y}} or {{z}}: it is not an XYZ template")
    for key in ("x", "y", "z"):
        url = url.replace("{" + key + "}", "${" + key + "}")
    return url, top


def xyz_service_xml(template: str, zoom: int, tile_size: int = TILE_SIZE, user_agent: str | None = None) -> str:
    """GDAL's TMS-minidriver description of an XYZ/TMS tile service at ``zoom`` (the whole EPSG:3857 world).

    Args:
        template: the layer's tile URL with ``{x}``, ``{y}``/``{-y}``, ``{z}``.
        zoom: the level to read.
        tile_size: pixels per tile side.
        user_agent: HTTP User-Agent (some servers refuse GDAL's default).

    Raises:
        WebLayerError: see :func:`gdal_tile_url`.
    """
    url, top = gdal_tile_url(template)
    h = f"{WEB_MERCATOR_HALF!r}"
    agent = f"\n  <UserAgent>{escape(user_agent)}</UserAgent>" if user_agent else ""
    return f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{escape(url)}</ServerUrl></Service>
  <DataWindow>
    <UpperLeftX>-{h}</UpperLeftX><UpperLeftY>{h}</UpperLeftY>
    <LowerRightX>{h}</LowerRightX><LowerRightY>-{h}</LowerRightY>
    <TileLevel>{zoom}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>{"top" if top else "bottom"}</YOrigin>
  </DataWindow>
  <Projection>EPSG:3857</Projection>
  <BlockSizeX>{tile_size}</BlockSizeX><BlockSizeY>{tile_size}</BlockSizeY>
  <BandsCount>4</BandsCount>
  <MaxConnections>{MAX_CONNECTIONS}</MaxConnections>
  <ZeroBlockHttpCodes>{",".join(str(c) for c in MISSING_TILE_CODES)}</ZeroBlockHttpCodes>{agent}
</GDAL_WMS>
"""


def wms_service_xml(
    url: str,
    layers: str,
    crs: str,
    bbox: tuple[float, float, float, float],
    size: tuple[int, int],
    image_format: str = "image/png",
    styles: str = "",
    version: str = "1.3.0",
) -> str:
    """GDAL's WMS-minidriver description of a WMS layer over ``bbox`` (in ``crs``) at ``size`` pixels.

    Args:
        url: the GetMap endpoint (without request parameters).
        layers: comma-separated WMS layer names.
        crs: e.g. ``EPSG:2056``.
        bbox: ``(xmin, ymin, xmax, ymax)`` in ``crs``, x/y (easting/northing) order (GDAL swaps the axes of the
            GetMap request itself where WMS 1.3.0 needs it, e.g. EPSG:4326).
        size: ``(width, height)`` pixels: the extent at the chosen GSD.
        image_format: MIME type asked of the server (PNG keeps transparency).
        styles: WMS styles.
        version: WMS version.
    """
    xmin, ymin, xmax, ymax = bbox
    key = "CRS" if version >= "1.3" else "SRS"
    return f"""<GDAL_WMS>
  <Service name="WMS">
    <Version>{escape(version)}</Version><ServerUrl>{escape(url)}</ServerUrl>
    <{key}>{escape(crs)}</{key}><ImageFormat>{escape(image_format)}</ImageFormat>
    <Layers>{escape(layers)}</Layers><Styles>{escape(styles)}</Styles>
    <Transparent>TRUE</Transparent>
  </Service>
  <DataWindow>
    <UpperLeftX>{xmin!r}</UpperLeftX><UpperLeftY>{ymax!r}</UpperLeftY>
    <LowerRightX>{xmax!r}</LowerRightX><LowerRightY>{ymin!r}</LowerRightY>
    <SizeX>{size[0]}</SizeX><SizeY>{size[1]}</SizeY>
  </DataWindow>
  <Projection>{escape(crs)}</Projection>
  <BlockSizeX>{TILE_SIZE}</BlockSizeX><BlockSizeY>{TILE_SIZE}</BlockSizeY>
  <BandsCount>4</BandsCount>
  <MaxConnections>{MAX_CONNECTIONS}</MaxConnections>
  <ZeroBlockHttpCodes>{",".join(str(c) for c in MISSING_TILE_CODES)}</ZeroBlockHttpCodes>
</GDAL_WMS>
"""
