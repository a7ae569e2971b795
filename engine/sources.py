"""Input names beyond local files: remote files (``/vsicurl/``, URLs), archives (``/vsizip/``), web tile services.

``--input`` takes any GDAL dataset name. This module says which names are remote, sets GDAL's network options so a
remote read never hangs, turns network failures into one-line errors with a hint, and clips a tiled web service
(which covers the whole world) to the requested extent before anything else sees it.

Decisions (where the issue is silent):

- **Names**: a local path, any ``/vsi...`` path, a GDAL service description (a ``.xml`` file or the XML text
  itself: ``<GDAL_WMS>``, ``<GDAL_WMTS>``), or a driver-prefixed name (``WMS:``, ``WMTS:``) is passed to GDAL as
  given. A bare ``http(s)://`` URL is read through ``/vsicurl/`` (streamed with range requests).
- **Network options** (:data:`HTTP_DEFAULTS`): connect time-out 10 s, read time-out 30 s, 2 retries 1 s apart (GDAL
  retries 429/5xx answers), each set only when the environment or the caller has not set it
  (``GDAL_HTTP_TIMEOUT=120 python -m engine predict ...`` wins), and only once a remote name is opened; no directory
  listing while a remote name is opened (:func:`opening`; never process-wide, which would hide local sidecars).
- **Errors**: HTTP 404 (file missing), 5xx (server failure), no answer (refused, unknown host, time-out) and a
  server without range requests (``/vsicurl/`` needs them to stream) each raise :class:`RemoteReadError` with the
  URL and what to do, when opening and when reading a window.
- **Missing basemap tiles**: a service description written by the plugin (:mod:`engine.web_tiles`) has an alpha
  band and lists HTTP 204/404 in ``<ZeroBlockHttpCodes>``: a tile the server does not have (outside its coverage)
  is transparent, so its pixels are masked and written as nodata, and the run logs a warning with the count of
  pixels without data (:func:`warn_unserved`). Any other HTTP error stops the run with :class:`RemoteReadError`. A
  service description written by hand keeps its own settings.
- **Extent**: a tiled web service is a world-sized raster at its zoom level; the engine reads it through a VRT of
  the requested window only (:func:`clip_web_service`), so GSD, outputs and statistics are those of the extent.
  An extent over :data:`MAX_WEB_PIXELS` pixels at the service's own resolution (such as a whole tile service,
  without ``--bbox``) is refused with the number.
- **Memory**: remote reads go through GDAL's block cache (bounded for the run by
  :func:`engine.raster_io.bounded_gdal_cache`) and ``/vsicurl/``'s own chunk cache (``CPL_VSIL_CURL_CACHE_SIZE``,
  16 MiB by default), so a remote run's memory is bounded as a local one's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from osgeo import gdal

from engine.errors import ParameterError, RasterReadError
from engine.tiling import Window

gdal.UseExceptions()

log = logging.getLogger("engine")

REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs")
SERVICE_TAGS = ("<GDAL_WMS", "<GDAL_WMTS", "<GDAL_WCS")
DRIVER_PREFIXES = ("WMS:", "WMTS:", "WCS:")
WEB_SERVICE_DRIVERS = ("WMS", "WMTS", "WCS")
HTTP_DEFAULTS = {
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
}
# Set only while a remote name is opened (see open_options): process-wide it would hide the .aux.xml sidecars (class
# names, statistics) of every local file opened afterwards in the same process (engine batch, the Python API).
NO_READDIR = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
RSP_DOMAIN, WEB_SERVICE_KEY = "RSP", "WEB_SERVICE"  # metadata marking a clipped web service (warn_unserved)
MAX_WEB_PIXELS = 400_000_000  # ≈ 6100 tiles of 256² at the service's own resolution: a download of hours
HTTP_CODE = re.compile(r"HTTP (?:response|status|error) code\s*:?\s*(\d+)", re.IGNORECASE)
NO_ANSWER = ("couldn't connect", "could not resolve", "failed to connect", "timed out", "timeout", "connection reset")
URL = re.compile(r"https?://[^\s<>\"']+")


class RemoteReadError(RasterReadError):
    """A remote input (URL, ``/vsicurl/``, web service) cannot be read: the server or the network failed."""

    hint = "check the address in a browser or with `gdalinfo NAME`; try again later if the server is down"


def dataset_name(name: str) -> str:
    """The GDAL dataset name of an ``--input`` value: a bare ``http(s)://`` URL becomes ``/vsicurl/URL``."""
    if name.startswith(("http://", "https://")):
        return "/vsicurl/" + name
    return name


def is_service_description(name: str) -> bool:
    """Whether ``name`` is GDAL service XML (the text itself, or a ``.xml`` file holding it) or ``WMS:``-style."""
    if name.lstrip().startswith(SERVICE_TAGS) or name.startswith(DRIVER_PREFIXES):
        return True
    if name.lower().endswith(".xml") and os.path.isfile(name):
        with open(name, encoding="utf-8", errors="replace") as f:
            return f.read(200).lstrip().startswith(SERVICE_TAGS)
    return False


def is_remote(name: str) -> bool:
    """Whether reading ``name`` goes over the network (``/vsicurl/`` and cloud paths, URLs, web services)."""
    return name.startswith(REMOTE_PREFIXES) or name.startswith(("http://", "https://")) or is_service_description(name)


def is_local_path(name: str) -> bool:
    """Whether ``name`` must exist as a local file (not ``/vsi...``, not service XML, not a driver-prefixed name)."""
    return not (name.startswith("/vsi") or is_remote(name))


def describe(name: str) -> str:
    """A short, one-line way to name an input in messages (service XML is named by its server URL)."""
    if name.lstrip().startswith("<"):
        match = URL.search(name)
        return f"the web service at {match.group(0)}" if match else "the web service description"
    return name


def apply_http_defaults() -> None:
    """Set :data:`HTTP_DEFAULTS` for the process where neither the environment nor the caller set them."""
    for key, value in HTTP_DEFAULTS.items():
        if gdal.GetConfigOption(key) is None:
            gdal.SetConfigOption(key, value)


@contextlib.contextmanager
def opening(name: str) -> Iterator[None]:
    """The config options for opening ``name``, set on this thread only while it opens: no directory listing for a
    remote name (a request per sibling file otherwise) unless the environment chose."""
    options = NO_READDIR if is_remote(name) and gdal.GetConfigOption("GDAL_DISABLE_READDIR_ON_OPEN") is None else {}
    for key, value in options.items():
        gdal.SetThreadLocalConfigOption(key, value)
    try:
        yield
    finally:
        for key in options:
            gdal.SetThreadLocalConfigOption(key, None)


def network_error(name: str, text: str) -> RemoteReadError | None:
    """The :class:`RemoteReadError` for GDAL's error ``text`` when it is a network failure, else None.

    Args:
        name: the input (for the message).
        text: GDAL's error message.
    """
    where = URL.search(text)
    url = where.group(0).rstrip(".,") if where else describe(name)
    low = text.lower()
    code = HTTP_CODE.search(text)
    status = int(code.group(1)) if code else None
    if "range downloading not supported" in low:
        return RemoteReadError(
            f"the server of {url} does not support HTTP range requests, which streaming a remote file needs",
            "download the file first (e.g. curl -O URL) and give the local path, or serve it from a server that "
            "supports ranges (any static web server or object store does)",
        )
    if status == 404:
        return RemoteReadError(
            f"not found on the server (HTTP 404): {url}",
            "check the address (open it in a browser or run `gdalinfo` on it); for a tile service, check the URL "
            "template and the zoom level",
        )
    if status is not None and status >= 400:
        kind = "server error" if status >= 500 else "request refused"
        return RemoteReadError(
            f"{kind} (HTTP {status}) reading {url}",
            "try again later; if it persists, the server or your access to it has a problem (check credentials, "
            "or ask the service's operator)",
        )
    if status == 0 or any(word in low for word in NO_ANSWER) or "curl error" in low:
        timeout = gdal.GetConfigOption("GDAL_HTTP_TIMEOUT") or HTTP_DEFAULTS["GDAL_HTTP_TIMEOUT"]
        return RemoteReadError(
            f"no answer from the server of {url}: {_reason(text)}",
            "check the address, your network connection and proxy (GDAL_HTTP_PROXY); a slow server may need a "
            f"longer time-out (GDAL_HTTP_TIMEOUT={timeout} s now)",
        )
    return None


def _reason(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if "error" in line.lower() or "connect" in line.lower():
            return re.sub(r"\s+", " ", line)[:200]
    return re.sub(r"\s+", " ", text)[:200]


def open_error(name: str, exc: Exception) -> RasterReadError:
    """The error to raise when GDAL cannot open ``name`` (a :class:`RemoteReadError` for network failures)."""
    remote = network_error(name, str(exc)) if is_remote(name) else None
    if remote is not None:
        return remote
    message = re.sub(r"\s+", " ", str(exc)).strip()
    return RasterReadError(f"GDAL cannot read {describe(name)}: {message}")


def is_web_service(ds: gdal.Dataset) -> bool:
    """Whether ``ds`` is a tiled web service (GDAL's WMS/WMTS/WCS drivers)."""
    driver = ds.GetDriver()
    return driver is not None and driver.ShortName in WEB_SERVICE_DRIVERS


def clip_web_service(ds: gdal.Dataset, region: Window, explicit: bool) -> tuple[gdal.Dataset, Window]:
    """A tiled web service read through a VRT of ``region`` only; other datasets are returned as they are.

    Args:
        ds: the opened input.
        region: the pixel window to process (:func:`engine.georef.requested_window`).
        explicit: whether ``--bbox`` or ``--window`` chose ``region`` (for the message).

    Returns:
        ``(dataset, region)``: for a web service, the VRT and its full window; else ``(ds, region)``.

    Raises:
        ParameterError: a web service extent larger than :data:`MAX_WEB_PIXELS` (e.g. a tile service without
            ``--bbox``: it covers the world).
    """
    if not is_web_service(ds):
        return ds, region
    pixels = region.width * region.height
    if pixels > MAX_WEB_PIXELS:
        what = "the chosen extent" if explicit else "the whole service (no --bbox or --window given)"
        raise ParameterError(
            f"{what} is {region.width}×{region.height} = {pixels:.3g} pixels at the service's resolution, more than "
            f"the {MAX_WEB_PIXELS:.3g} a run downloads",
            "give a smaller --bbox (with --bbox-crs) or --window, or write the service description at a lower zoom "
            "level (<TileLevel>)",
        )
    clipped = gdal.Translate("", ds, format="VRT", srcWin=[region.col, region.row, region.width, region.height])
    clipped.SetMetadataItem(WEB_SERVICE_KEY, "YES", RSP_DOMAIN)
    return clipped, Window(0, 0, region.height, region.width)


def warn_unserved(source: gdal.Dataset, classes: list[dict[str, Any]], region: Window) -> int:
    """Log a warning when a web service left pixels of ``region`` without data (missing tiles); their count.

    Args:
        source: the run's source (a VRT made by :func:`clip_web_service`, or any other dataset: then nothing).
        classes: the run's per-class statistics (``pixels`` each).
        region: the processed source window.
    """
    if source.GetMetadataItem(WEB_SERVICE_KEY, RSP_DOMAIN) != "YES":
        return 0
    missing = region.width * region.height - sum(int(c["pixels"]) for c in classes)
    if missing > 0:
        log.warning(
            "%d of %d pixels (%.1f %%) had no data from the web service (tiles it does not have, or transparent): "
            "they are nodata in the outputs",
            missing,
            region.width * region.height,
            100 * missing / (region.width * region.height),
        )
    return missing


def read_error(exc: RuntimeError, where: str) -> RasterReadError:
    """The error for a window that cannot be read: :class:`RemoteReadError` for network failures, else a file error.

    Args:
        exc: GDAL's error.
        where: which pixels (for the message).
    """
    remote = network_error("", str(exc))
    if remote is not None:
        return RemoteReadError(f"cannot read {where}: {remote}", remote.hint)
    return RasterReadError(
        f"cannot read {where} (the file may be truncated or damaged): {exc}",
        "check the file with `gdalinfo -checksum FILE`; copy or export it again",
    )
