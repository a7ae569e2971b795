"""Many rasters, one model load: ``python -m engine batch --model M --output-dir D INPUT...``.

Each input is segmented by :func:`engine.predict.predict` with the network loaded once (its ``network=``); outputs
are named after the input in ``D``, and a JSON summary (:data:`SUMMARY_NAME`) says what happened to each input.

Decisions (where the issue is silent):

- **Inputs**: each ``INPUT`` is a raster (any GDAL dataset name, see :mod:`engine.sources`), a glob pattern (``*``,
  ``?``, ``[``; sorted matches), a folder (its files with a raster extension, :data:`RASTER_EXTENSIONS`, sorted, not
  recursive), or a text file of names (``.txt``: one per line, ``#`` comments, relative names from the text file's
  folder). The same input twice is run once. A pattern, folder or list that yields no raster is an error before
  anything runs.
- **Outputs**: ``D/<input stem>_classes.tif``, ``_polygons.gpkg`` (``--vector``), ``_confidence.tif``
  (``--confidence``), ``_uncertainty.tif`` (``--uncertainty``). Two inputs with the same stem are refused up front
  (their outputs would collide).
- **Failures**: an input that fails (unreadable, wrong bands, ...) is reported (a ``status`` event and its summary
  entry with the error's message and hint), leaves nothing behind, and the next input runs. The command then ends
  with an ``error`` event naming the failed inputs and exit code 1; otherwise ``done`` and 0. Cancel stops the batch.
- **Resume**: an input whose requested outputs all exist is skipped (the engine renames outputs onto their names
  only when finished, so an existing output is a complete one); ``--overwrite`` runs every input again.
- **Mosaic** (``--mosaic``): the inputs are joined into one GDAL VRT (``gdal.BuildVRT``, written in a temporary
  folder and removed afterwards) and segmented as one raster, so windows run across tile borders; outputs are
  ``D/mosaic_classes.tif`` etc. Inputs with different band counts, data types or CRSs are refused (one line naming
  the first that differs).

Events: ``start`` (``inputs``, ``output_dir``, ``mosaic``), per input ``item`` (``index``, ``total``, ``input``,
``status`` = done|skipped|failed, ``outputs`` or ``message``/``hint``, ``seconds``), each run's ``progress``
events with ``item``/``items`` added, then ``done`` (``outputs``: ``{"summary": path}``, ``counts``) or ``error``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from osgeo import gdal

from engine import events, options
from engine.atomic import write_json
from engine.errors import CancelledError, EngineError, ParameterError, RasterReadError, error_event
from engine.model_file import read_model_info
from engine.predict import PredictRequest, predict

gdal.UseExceptions()

log = logging.getLogger("engine")

ITEM = "item"  # event: one input finished (done, skipped or failed)
SUMMARY_NAME = "batch_summary.json"
MOSAIC_STEM = "mosaic"
RASTER_EXTENSIONS = options.RASTER_EXTENSIONS
LIST_EXTENSION = ".txt"
GLOB_CHARS = "*?["


class BatchInputError(EngineError):
    """The batch's inputs cannot be listed (no raster found, colliding names) or joined into a mosaic."""

    hint = "give raster files, glob patterns (quoted), folders of rasters or a .txt file with one raster per line"


@dataclass(frozen=True)
class BatchRequest:
    """One batch: the inputs, where outputs go, and the :class:`PredictRequest` options shared by every input.

    Attributes:
        inputs: files, globs, folders or ``.txt`` lists (see the module docstring).
        output_dir: folder of the outputs and the summary (created when missing).
        template: options for every run (its ``input``/``output``/``vector``/``confidence``/``uncertainty`` are
            replaced).
        vector: also write ``_polygons.gpkg``.
        confidence: also write ``_confidence.tif``.
        mosaic: segment the inputs as one VRT mosaic.
        summary: summary JSON path (default ``output_dir/batch_summary.json``).
        uncertainty: also write ``_uncertainty.tif``.
    """

    inputs: tuple[str, ...]
    output_dir: str
    template: PredictRequest
    vector: bool = False
    confidence: bool = False
    mosaic: bool = False
    summary: str | None = None
    uncertainty: bool = False


def expand_inputs(inputs: list[str] | tuple[str, ...]) -> list[str]:
    """The raster names of ``inputs`` (files, globs, folders, ``.txt`` lists), in order, without repeats.

    Raises:
        BatchInputError: an entry yields no raster, or nothing is given.
    """
    names: list[str] = []
    for entry in inputs:
        found = _expand_one(entry)
        if not found:
            raise BatchInputError(_nothing_found(entry))
        names += [n for n in found if n not in names]
    if not names:
        raise BatchInputError("no input raster given")
    return names


def _expand_one(entry: str) -> list[str]:
    if os.path.isdir(entry):
        files = (os.path.join(entry, f) for f in sorted(os.listdir(entry)))
        return [f for f in files if os.path.isfile(f) and f.lower().endswith(RASTER_EXTENSIONS)]
    if entry.lower().endswith(LIST_EXTENSION) and os.path.isfile(entry):
        base = os.path.dirname(os.path.abspath(entry))
        with open(entry, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        return [name if _is_remote_or_absolute(name) else os.path.join(base, name) for name in lines
                if name and not name.startswith("#")]  # fmt: skip
    if any(c in entry for c in GLOB_CHARS) and not entry.startswith("/vsi") and not os.path.exists(entry):
        return sorted(p for p in glob.glob(entry) if os.path.isfile(p))
    return [entry]


def _is_remote_or_absolute(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("/vsi", "<")) or "://" in name


def _nothing_found(entry: str) -> str:
    if os.path.isdir(entry):
        kinds = ", ".join(RASTER_EXTENSIONS[:5])
        return f"the folder {entry} holds no rasters (files ending in {kinds}, ...)"
    if entry.lower().endswith(LIST_EXTENSION):
        return f"the list {entry} names no raster (one name per line; # starts a comment)"
    return f"no file matches {entry}"


def output_set(stem: str, output_dir: str, vector: bool, confidence: bool, uncertainty: bool = False) -> dict[str, str]:
    """``{"output", "vector"?, "confidence"?, "uncertainty"?}`` paths of one input's outputs in ``output_dir``."""
    paths = {"output": os.path.join(output_dir, stem + options.OUTPUT_SUFFIXES[events.LABELS])}
    if vector:
        paths["vector"] = os.path.join(output_dir, stem + options.OUTPUT_SUFFIXES[events.VECTOR])
    if confidence:
        paths["confidence"] = os.path.join(output_dir, stem + options.OUTPUT_SUFFIXES[events.CONFIDENCE])
    if uncertainty:
        paths["uncertainty"] = os.path.join(output_dir, stem + options.OUTPUT_SUFFIXES[events.UNCERTAINTY])
    return paths


def input_stem(name: str) -> str:
    """The name outputs are named after: the file name without extension (``/vsi`` prefixes and URLs included)."""
    base = name.rstrip("/").split("?")[0]
    return os.path.splitext(os.path.basename(base))[0] or "input"


def check_band_compatibility(names: list[str]) -> None:
    """Refuse a mosaic of rasters with different band counts, data types or CRSs (``gdal.BuildVRT`` would drop them).

    Raises:
        BatchInputError: naming the first raster that differs from the first one.
    """
    first = None
    for name in names:
        try:
            ds = gdal.Open(name)
        except RuntimeError as exc:
            raise RasterReadError(f"GDAL cannot read {name}: {exc}") from exc
        srs = ds.GetSpatialRef()
        key = (ds.RasterCount, ds.GetRasterBand(1).DataType, srs.ExportToProj4() if srs else "")
        if first is None:
            first = (name, key)
            continue
        if key != first[1]:
            what = ("band count", "data type", "CRS")[next(i for i in range(3) if key[i] != first[1][i])]
            detail = f" ({first[1][0]} bands vs {key[0]})" if what == "band count" else ""
            raise BatchInputError(
                f"cannot build one mosaic: {name} differs from {first[0]} in {what}{detail}",
                "segment them without --mosaic, or make them alike first (gdal_translate -b / gdalwarp -t_srs)",
            )


def run_batch(
    request: BatchRequest, on_event: events.EventCallback | None = None, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Segment every input (or their mosaic) with one network load; write the summary; return it.

    Args:
        request: the batch.
        on_event: receives the events of the module docstring.
        cancel: set it to stop after the current window batch; :class:`CancelledError` is raised.

    Returns:
        the summary dict (also written as JSON): ``model``, ``output_dir``, ``inputs`` (one entry per input: ``input``,
        ``status``, ``outputs`` or ``error``/``hint``, ``seconds``), ``counts``.

    Raises:
        BatchInputError, engine.errors.EngineError: before anything runs (inputs, model, output folder).
        CancelledError: on cancel (the summary is written first).
    """
    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    names = expand_inputs(request.inputs)
    info = read_model_info(request.template.model)  # a bad model fails before any input
    if not os.path.isdir(request.output_dir):
        parent = os.path.dirname(os.path.abspath(request.output_dir))
        if not os.path.isdir(parent):
            raise ParameterError(f"the parent of --output-dir does not exist: {parent}", "create it first")
        os.makedirs(request.output_dir, exist_ok=True)
    summary_path = request.summary or os.path.join(request.output_dir, SUMMARY_NAME)
    with tempfile.TemporaryDirectory(prefix="rsp-mosaic-") as scratch:
        jobs = _jobs(request, names, scratch)
        emit(events.event(events.START, inputs=names, output_dir=request.output_dir, mosaic=request.mosaic,
                          total=len(jobs)))  # fmt: skip
        from engine.inference import load_network

        t = request.template
        network = None
        entries: list[dict[str, Any]] = []
        summary: dict[str, Any] = {
            "model": t.model,
            "output_dir": os.path.abspath(request.output_dir),
            "inputs": entries,
        }
        try:
            for index, (label, job) in enumerate(jobs, start=1):
                finals = job.output_paths()  # {role: path}, the roles of engine.events
                if not t.overwrite and all(os.path.exists(p) for p in finals.values()):
                    entry = {"input": label, "status": "skipped", "outputs": finals, "seconds": 0.0}
                else:
                    if network is None:
                        network = load_network(t.model, t.device, threads=t.threads, exact=t.exact,
                                               compile_mode=t.compile, info=info)  # fmt: skip
                    entry = _run_one(label, replace(job, overwrite=True), network, emit, cancel, index, len(jobs))
                entries.append(entry)
                emit(events.event(ITEM, index=index, total=len(jobs), **entry))
        finally:
            summary["counts"] = {s: sum(e["status"] == s for e in entries) for s in ("done", "skipped", "failed")}
            _write_json(summary_path, summary)
    failed = [e["input"] for e in entries if e["status"] == "failed"]
    if failed:
        raise EngineError(
            f"{len(failed)} of {len(jobs)} inputs failed: {', '.join(failed)}",
            f"see each input's error in {summary_path}; fix them and run the same command again "
            "(finished inputs are skipped)",
        )
    emit(events.event(events.DONE, outputs={"summary": summary_path}, counts=summary["counts"]))
    return summary


def _jobs(request: BatchRequest, names: list[str], scratch: str) -> list[tuple[str, PredictRequest]]:
    """``(input label, request)`` per run: one per input, or the one mosaic run."""
    t = request.template

    def job(source: str, stem: str) -> PredictRequest:
        paths = output_set(stem, request.output_dir, request.vector, request.confidence, request.uncertainty)
        return replace(t, input=source, output=paths["output"], vector=paths.get("vector"),
                       confidence=paths.get("confidence"), uncertainty=paths.get("uncertainty"))  # fmt: skip

    if request.mosaic:
        check_band_compatibility(names)
        vrt = os.path.join(scratch, f"{MOSAIC_STEM}.vrt")
        gdal.BuildVRT(vrt, names)
        return [(f"mosaic of {len(names)} rasters", job(vrt, MOSAIC_STEM))]
    stems: dict[str, str] = {}
    for name in names:
        stem = input_stem(name)
        if stem in stems:
            raise BatchInputError(
                f"{stems[stem]} and {name} would write the same outputs ({stem}_classes.tif)",
                "run them into different --output-dir folders, or rename one",
            )
        stems[stem] = name
    return [(name, job(name, input_stem(name))) for name in names]


def _run_one(
    label: str,
    job: PredictRequest,
    network: tuple[Any, Any],
    emit: events.EventCallback,
    cancel: threading.Event,
    index: int,
    total: int,
) -> dict[str, Any]:
    def forward(event: dict[str, Any]) -> None:
        if event.get("event") == events.PROGRESS:
            emit({**event, "item": index, "items": total})

    t0 = time.monotonic()
    try:
        result = predict(job, on_event=forward, cancel=cancel, network=network)
    except CancelledError:
        raise
    except Exception as exc:  # any failure of one input is reported, and the batch goes on
        err = error_event(exc)
        log.warning("%s failed: %s", label, err["message"])
        emit(events.event(events.STATUS, message=f"input {index}/{total} failed: {label}: {err['message']}"))
        return {"input": label, "status": "failed", "error": err["message"], "hint": err["hint"],
                "kind": err["kind"], "seconds": round(time.monotonic() - t0, 3)}  # fmt: skip
    return {"input": label, "status": "done", "outputs": result.outputs, "classes": result.classes,
            "seconds": result.seconds}  # fmt: skip


def _write_json(path: str, data: dict[str, Any]) -> None:
    write_json(path, data, indent=2, sort_keys=False)


def add_batch_parser(sub: Any) -> None:
    """Add the ``batch`` subcommand to the argparse subparsers ``sub`` (shares ``predict``'s run options)."""
    p = sub.add_parser(
        "batch",
        help="segment many rasters with one model load (or their mosaic)",
        description="Segment many rasters: one output set per input in --output-dir, named after it, and a JSON "
        f"summary ({SUMMARY_NAME}); inputs whose outputs exist are skipped. Exit codes: {events.EXIT_OK} all done, "
        f"{events.EXIT_ERROR} an input failed (the others ran), {events.EXIT_CANCELLED} cancelled.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="rasters, glob patterns, folders or .txt lists of names")
    p.add_argument("--model", required=True, help="model file (.rspmodel)")
    p.add_argument("--output-dir", required=True, help="folder of the outputs (created when missing)")
    p.add_argument("--vector", action="store_true", help="also write <name>_polygons.gpkg")
    p.add_argument("--confidence", action="store_true", help="also write <name>_confidence.tif")
    p.add_argument("--uncertainty", action="store_true", help="also write <name>_uncertainty.tif (1 - top-two margin)")
    p.add_argument("--mosaic", action="store_true", help="join the inputs into one VRT and segment it as one raster")
    p.add_argument("--summary", help=f"summary JSON path (default: OUTPUT_DIR/{SUMMARY_NAME})")
    p.add_argument("--gsd", default="model", metavar="model|native|METRES", help="as for predict")
    p.add_argument("--bands", type=options.int_list, metavar="1,2,3", help="raster bands feeding the model's inputs")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--tile", type=int, help="window size in pixels (default: the model file's)")
    p.add_argument("--stride", type=int, help="window step in pixels (default: the model file's)")
    options.add_window_options(p)
    p.add_argument("--value-max", type=float, help="raster value mapped to the top of the model's value range")
    p.add_argument("--min-area", type=float, default=0.0, help="polygons below this area (m²) are merged/dropped")
    p.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance (ground metres)")
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    p.add_argument("--overwrite", action="store_true", help="run every input again, replacing existing outputs")
    p.add_argument("--debug", action="store_true", help="debug logs and tracebacks on stderr")
    p.set_defaults(func=run_batch_command)


def batch_request(args: argparse.Namespace) -> BatchRequest:
    """The :class:`BatchRequest` of the parsed ``batch`` options."""
    template = PredictRequest(
        model=args.model,
        input="",
        output=os.path.join(args.output_dir, "_"),
        bands=args.bands,
        gsd=args.gsd,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        tile=args.tile,
        stride=args.stride,
        compile=args.compile,
        precision=args.precision,
        exact=args.exact,
        blend=args.blend,
        value_max=args.value_max,
        min_area=args.min_area,
        simplify=args.simplify,
        cog=args.cog,
        overwrite=args.overwrite,
    )
    return BatchRequest(tuple(args.inputs), args.output_dir, template, args.vector, args.confidence, args.mosaic,
                        args.summary, args.uncertainty)  # fmt: skip


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``batch`` under the event-stream contract (:func:`engine.console.run_cancellable`); the exit code."""
    from engine.console import run_cancellable

    def work(emit: events.EventCallback, cancel: threading.Event) -> int:
        run_batch(batch_request(args), on_event=emit, cancel=cancel)  # predict() bounds GDAL's cache per input
        return events.EXIT_OK

    return run_cancellable(work, debug=args.debug)
