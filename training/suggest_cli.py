"""``python -m training suggest``: where to label next, under the engine's command-line contract.

One JSON object per line on stdout (``start``, ``status``, ``progress``, ``warning``, ``done``, ``error`` with
``message`` and ``hint``, ``cancelled``), logs on stderr, exit codes 0 / 1 (error) / 130 (cancelled by SIGINT or
SIGTERM). No traceback unless ``--debug``. Nothing is written under ``--output`` unless the run finished. What it
computes: :mod:`training.suggest`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from engine.events import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK
from training.suggest import DEFAULT_COUNT, MIN_SIZE, OUTPUT_SUFFIX


def add_parser(sub: Any) -> None:
    """Register ``suggest`` on the ``python -m training`` sub-command parser."""
    p = sub.add_parser(
        "suggest",
        help="where to label next: squares where the model is least sure, ranked, away from existing labels",
        description="Suggest square areas to label next: the model segments the raster, each candidate square is "
        "scored by its mean uncertainty 1 - (p1 - p2) (one minus the margin between the two most probable classes), "
        "and a ranked, diverse set is written as polygons (rank 1 first). JSON events on stdout, logs on stderr; "
        f"exit codes {EXIT_OK} ok, {EXIT_ERROR} error, {EXIT_CANCELLED} cancelled.",
    )
    p.add_argument("--model", required=True, help="model file (.rspmodel)")
    p.add_argument("--raster", required=True, help="GDAL raster to suggest squares on")
    p.add_argument("--labels", help="existing labels (any vector format, geometry and CRS): squares avoid them")
    p.add_argument("--class-field", help="with --labels: only features with this field set count as labelled")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"squares to suggest (default {DEFAULT_COUNT})")
    p.add_argument(
        "--size", type=int, help=f"square side in raster pixels, at least {MIN_SIZE} (default: the model's tile size)"
    )
    p.add_argument("--output", help=f"GeoPackage to write (default: <raster stem>{OUTPUT_SUFFIX} next to the raster)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    p.set_defaults(func=run_suggest)


def run_suggest(args: argparse.Namespace) -> int:
    """The ``suggest`` command: :func:`training.suggest.suggest` under :func:`engine.console.run_cancellable`."""
    from engine.console import run_cancellable
    from training.suggest import SuggestRequest, suggest

    def work(emit: Any, cancel: Any) -> int:
        options = {f.name: getattr(args, f.name) for f in dataclasses.fields(SuggestRequest)}
        suggest(SuggestRequest(**options), on_event=emit, cancel=cancel)
        return EXIT_OK

    return run_cancellable(work, args.debug, cancelled_message="cancelled; nothing was written under --output")
