"""``python -m engine``: ``predict`` (this module), ``batch`` (:mod:`engine.batch`), ``import``/``info``
(``engine.importer``), ``warmup`` (:mod:`engine.warmup`).

Output protocol of ``predict``: one JSON object per line on stdout (the events of :mod:`engine.events`); logs on
stderr. When stdout is a terminal, a progress bar on stderr replaces the ``progress`` lines. No traceback unless
``--debug``. SIGINT/SIGTERM set the cancel event: the run stops at the next batch, removes its temporary files and
exits with 130. Printing, signals and exit codes are :mod:`engine.console`'s, shared with ``training finetune``.

Exit codes (:mod:`engine.events`): 0 success, 1 error (an ``error`` event was printed), 130 cancelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import typing
from typing import Any

from engine import events, faults, options
from engine.errors import ParameterError
from engine.events import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK

log = logging.getLogger("engine")


def add_predict_parser(sub: Any) -> None:
    """Add the ``predict`` subcommand and its options to the argparse subparsers ``sub``."""
    p = sub.add_parser(
        "predict",
        help="segment a raster with a model file",
        description="Segment a GDAL raster; JSON events on stdout, logs on stderr. "
        f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} error, {EXIT_CANCELLED} cancelled.",
    )
    p.add_argument("--model", required=True, help="model file (.rspmodel)")
    p.add_argument("--input", required=True, help="GDAL-readable raster")
    p.add_argument("--output", required=True, help="class-id GeoTIFF to write (uint8, nodata 255)")
    p.add_argument(
        "--vector", help="also write polygons to this GeoPackage (class_id, class_name, area_m2, confidence)"
    )
    p.add_argument("--confidence", help="also write the chosen class's probability (float32 GeoTIFF, nodata -1)")
    p.add_argument(
        "--uncertainty",
        help="also write 1 - (p1 - p2), one minus the margin between the two most probable classes "
        "(float32 GeoTIFF 0..1, nodata -1): where labelling helps most",
    )
    ext = p.add_mutually_exclusive_group()
    ext.add_argument(
        "--bbox",
        type=options.float_list(4),
        metavar="XMIN,YMIN,XMAX,YMAX",
        help="process only this box (raster CRS unless --bbox-crs)",
    )
    ext.add_argument(
        "--window", type=options.float_list(4), metavar="XOFF,YOFF,XSIZE,YSIZE", help="process only this pixel window"
    )
    p.add_argument("--mask", help="vector file: process only inside its polygons (combinable with --bbox/--window)")
    p.add_argument("--bbox-crs", help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's)")
    p.add_argument(
        "--gsd",
        default=options.GSD_MODEL,
        metavar="model|native|METRES",
        help="ground sample distance the network reads the raster at: the model's (default), the raster's own, "
        "or metres (e.g. 0.3)",
    )
    p.add_argument("--bands", type=options.int_list, metavar="1,2,3", help="raster bands feeding the model's inputs")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--tile", type=int, help="window size in pixels (default: the model file's)")
    p.add_argument("--stride", type=int, help="window step in pixels (default: the model file's, at most --tile)")
    options.add_window_options(p)
    p.add_argument("--value-max", type=float, help="raster value mapped to the top of the model's value range")
    p.add_argument("--min-area", type=float, default=0.0, help="polygons below this area (m²) are merged/dropped")
    p.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance (ground metres)")
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run for --output (killed, cancelled or failed; same input, model and options) "
        "instead of starting again",
    )
    p.add_argument(
        "--distributed", action="store_true", help="run under torchrun: ranks split the rows, rank 0 joins the parts"
    )
    p.add_argument("--debug", action="store_true", help="debug logs and tracebacks on stderr")
    p.set_defaults(func=run_predict)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as the stream's ``error`` event too (exit 1), not only as text."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        hint = "see python -m engine predict --help"
        if "expected one argument" in message:
            hint += "; a value starting with '-' needs '=', e.g. --bbox=-10,40,-9,41"
        print(json.dumps(events.event(events.ERROR, message=message, hint=hint, kind="UsageError")), flush=True)
        self.exit(EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m engine`` parser: ``predict``, and ``import``/``info`` when :mod:`engine.importer` is present."""
    parser = _Parser(prog="python -m engine", description="RSP segmentation engine")
    sub = parser.add_subparsers(dest="command", required=True)
    add_predict_parser(sub)
    from engine.batch import add_batch_parser

    add_batch_parser(sub)
    try:
        from engine.importer import register_cli
    except ImportError as exc:
        log.debug("engine.importer not available: %s", exc)

        def missing(_args: argparse.Namespace) -> int:
            print(
                "the import/info commands need engine/importer.py, which is missing from this installation",
                file=sys.stderr,
            )
            return EXIT_ERROR

        for name in ("import", "info"):
            sub.add_parser(name, help="(unavailable: engine.importer missing)").set_defaults(func=missing)
    else:
        register_cli(sub)
    from engine.warmup import add_parser as add_warmup_parser

    add_warmup_parser(sub)
    return parser


def _request(args: argparse.Namespace) -> Any:
    """The :class:`engine.predict.PredictRequest` of the parsed options (each field is the option of its name)."""
    from engine.predict import PredictRequest

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(PredictRequest)}
    if args.window is not None:
        if any(v != int(v) for v in args.window):
            raise ParameterError("--window takes whole pixels: XOFF,YOFF,XSIZE,YSIZE")
        values["window"] = tuple(int(v) for v in args.window)
    return PredictRequest(**values)


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict`` under the event-stream contract (:func:`engine.console.run_cancellable`); the exit code."""
    from engine.console import EventPrinter, run_cancellable

    def work(emit: events.EventCallback, cancel: threading.Event) -> int:
        request = _request(args)
        if args.distributed and args.resume:
            raise ParameterError("--resume is not available with --distributed")
        if args.distributed:
            from engine.distributed import predict_distributed
            from engine.raster_io import bounded_gdal_cache

            with bounded_gdal_cache():
                predict_distributed(request, on_event=emit, cancel=cancel)
        else:
            from engine.predict import predict

            predict(request, on_event=emit, cancel=cancel)
        return EXIT_OK

    rank = int(os.environ.get("RANK", "0")) if args.distributed else 0
    message = "cancelled; nothing was written under the requested names"
    return run_cancellable(work, debug=args.debug, emit=EventPrinter(rank), cancelled_message=message)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m engine`` with ``argv`` (default: ``sys.argv[1:]``); the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # A GDAL dataset that fails while closing (e.g. disk full) reports through __del__; the run's own error event
        # already says what happened, so keep the analyst's stderr free of tracebacks.
        sys.unraisablehook = lambda unraisable: log.debug("ignored in %r: %s", unraisable.object, unraisable.exc_value)
    parser = build_parser()
    args = parser.parse_args(argv)
    code = int(args.func(args))
    inference = sys.modules.get("engine.inference")  # loaded by the commands that run torch
    abandoned = inference is not None and inference.abandoned_work()
    if abandoned or "torch._inductor" in sys.modules:
        # A cancelled run may have left torch work running (e.g. a forward pass), and torch.compile's worker pool
        # takes seconds to shut down at exit: the outputs are final (or removed) by now, so exit without waiting.
        faults.write_counts()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
