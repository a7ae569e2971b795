"""``python -m training finetune`` and ``python -m training accuracy``: the engine's command-line contract.

One JSON object per line on stdout (``start``, ``status``, ``progress``, ``done``, ``error`` with ``message`` and
``hint``, ``cancelled``), logs and the training progress bar on stderr, exit codes 0 / 1 (error) / 130 (cancelled by
SIGINT or SIGTERM, which stop a run within one forward/backward pass). No traceback unless ``--debug``. Nothing is
written under ``--output`` unless the run finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

from engine.events import DONE, EXIT_OK
from engine.options import int_list

log = logging.getLogger("training")


def add_parsers(sub: Any) -> None:
    """Register ``finetune`` and ``accuracy`` on the ``python -m training`` sub-command parser."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on your own labels (polygons or a class raster); honest spatial hold-out",
        description="Fine-tune on labels digitised over your imagery. JSON events on stdout, logs on stderr; exit "
        "codes 0 ok, 1 error, 130 cancelled. Start from --init MODEL.rspmodel, --backbone CKPT.pth [--arch A], "
        "--arch A (scratch), or, with none of them, the bundled start model (resources/models/).",
    )
    p.add_argument("--raster", dest="rasters", action="append", required=True, help="GDAL raster (repeat for several)")
    p.add_argument(
        "--labels",
        action="append",
        required=True,
        help="polygons (any OGR format and CRS) or a single-band class raster; one per --raster, or one for all",
    )
    p.add_argument("--class-field", help="the polygons' field holding class names or integer codes")
    p.add_argument("--output", required=True, help="model file to write (.rspmodel)")
    p.add_argument(
        "--init",
        help="start from this model file (RSP UperNet, the demo, an earlier fine-tune); default with no "
        "--backbone/--arch: the bundled start model",
    )
    p.add_argument("--backbone", help="start from an RSP pretraining checkpoint (rsp-*-ckpt.pth)")
    p.add_argument("--arch", help="architecture (rsp_resnet50, rsp_swin_t, rsp_vitaev2_s, lite_resnet)")
    p.add_argument("--iters", type=int, help="training iterations (default: per architecture, 300 for lite_resnet)")
    p.add_argument("--work-dir", help="checkpoints, label rasters, report.json (default: <output>_finetune)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --work-dir")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")
    p.add_argument("--batch-size", type=int, help="chips per optimiser step")
    p.add_argument("--tile", type=int, help="chip and window size in pixels (multiple of 32)")
    p.add_argument("--gsd", type=float, help="ground sample distance in metres to train at (default: the raster's)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the heads only")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of labelled blocks held out (0.2)")
    p.add_argument("--classes", help="classes.json: order, names, colours and values of the classes")
    p.add_argument("--bands", type=int_list, help="raster bands feeding the model's inputs, e.g. 1,2,3")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the sampling and the augmentation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="write the model the hold-out measured, trained without the held-out blocks (default: once measured, "
        "train again on all labels, held-out blocks included, and write that model; about twice the time)",
    )
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    p.set_defaults(func=run_finetune)

    p = sub.add_parser(
        "accuracy",
        help="accuracy of a class raster against reference polygons or a reference class raster",
        description="Compare a class raster (as the engine writes it) with reference labels, matching classes by "
        "name. Prints a table; JSON with OA, kappa, mIoU, mF1 (x100), per_class and confusion_matrix.",
    )
    p.add_argument("--prediction", required=True, help="class raster (class names from its category names)")
    p.add_argument("--reference", required=True, help="reference polygons or class raster")
    p.add_argument("--class-field", help="the reference polygons' class field")
    p.add_argument("--output", help="write the JSON report here")
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    p.set_defaults(func=run_accuracy)


def run_finetune(args: argparse.Namespace) -> int:
    """The ``finetune`` command."""
    from engine.console import EventPrinter, run_cancellable
    from training.finetune.run import FinetuneRequest, finetune

    def work(emit: Any, cancel: Any) -> int:
        # every option has the name of the request field it fills
        options = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneRequest)}
        request = FinetuneRequest(**{**options, "rasters": tuple(args.rasters), "labels": tuple(args.labels)})
        finetune(request, on_event=emit, cancel=cancel)
        return EXIT_OK

    # the trainer draws its own progress bar on a terminal
    return run_cancellable(
        work, args.debug, EventPrinter(bar=False), "cancelled; the work folder keeps the last checkpoint (--resume)"
    )


def run_accuracy(args: argparse.Namespace) -> int:
    """The ``accuracy`` command."""
    from engine.console import run_cancellable
    from training.finetune.accuracy import accuracy, format_report

    def work(emit: Any, cancel: Any) -> int:
        report = accuracy(args.prediction, args.reference, args.class_field, args.output, cancel=cancel)
        print(format_report(report), file=sys.stderr)
        emit({"event": DONE, "outputs": {"report": args.output} if args.output else {}, **_headline(report)})
        return EXIT_OK

    return run_cancellable(work, args.debug)


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("OA", "kappa", "mIoU", "mF1", "per_class", "confusion_matrix", "class_names")}
