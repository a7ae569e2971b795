"""The engine's event stream contract: event names, output roles, exit codes and the throttled progress event.

``python -m engine predict`` prints one JSON object per line on stdout, ``{"event": <name>, ...}``; the QGIS plugin
(:mod:`qgis_plugin.progress_stream`), Processing and scripts read the same stream, and ``training finetune`` /
``training accuracy`` speak it too. Standard library only: the plugin imports this module in QGIS's own Python.

Events:

- ``start``: the run is prepared (input, model, device, region, tile, stride, bands, ``total`` windows; the GSD read
  at: ``gsd_choice``, ``native_gsd_m``, ``gsd_m``, ``resampling_factor``, see :func:`engine.georef.gsd_fields`).
- ``status``: ``message``, a long step without progress (such as compiling the network).
- ``warning``: ``message``, something the run worked around (e.g. out of memory: ``batch_size`` halved).
- ``progress``: ``done`` of ``total`` windows, ``eta_s`` seconds left (None when unknown).
- ``done``: ``outputs`` (role → path, roles below), ``classes`` (``id``, ``name``, ``pixels``, ``area_m2``),
  ``windows``, ``seconds``.
- ``error``: ``message``, ``hint`` (what to do), ``kind`` (the exception type).
- ``cancelled``: ``message``, ``hint``; partial outputs were removed.

Exit codes: :data:`EXIT_OK` success, :data:`EXIT_ERROR` an ``error`` event was printed, :data:`EXIT_CANCELLED`
cancelled (SIGINT/SIGTERM or the cancel event).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Event names (the ``"event"`` field).
START = "start"
STATUS = "status"
WARNING = "warning"
PROGRESS = "progress"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"

# Output roles: keys of the ``done`` event's ``outputs``.
LABELS = "labels"  # class-id GeoTIFF
CONFIDENCE = "confidence"  # float32 GeoTIFF of the chosen class's probability
UNCERTAINTY = "uncertainty"  # float32 GeoTIFF of 1 - (p1 - p2), the top-two probability margin's complement
VECTOR = "vector"  # GeoPackage polygons

# Process exit codes.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CANCELLED = 130  # 128 + SIGINT, as shells report it

EventCallback = Callable[[dict[str, Any]], None]


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The event dict ``{"event": name, **fields}``."""
    return {"event": name, **fields}


class ProgressEvents:
    """Turns ``(done, total)`` calls into ``progress`` events with an ETA, at most one per ``min_interval_s``.

    The last call (``done == total``) is always emitted.

    Args:
        on_event: receives each event dict.
        min_interval_s: least time between two events, seconds.
    """

    def __init__(self, on_event: EventCallback, min_interval_s: float = 0.2) -> None:
        self.on_event, self.t0, self.last, self.min_interval = on_event, time.monotonic(), 0.0, min_interval_s

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` work units finished."""
        now = time.monotonic()
        if done < total and now - self.last < self.min_interval:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else None
        self.on_event(event(PROGRESS, done=done, total=total, eta_s=None if eta is None else round(eta, 1)))
