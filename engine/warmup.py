"""``python -m engine warmup --model M``: compile a model's network ahead of the runs that will use it.

Compiles the network for the batch size, window size and precision a run with the same options uses, so inductor's
on-disk cache holds the graph, and measures the eager and compiled seconds per window and the compile cost into the
compile measurements (:mod:`engine.compile_plan`). ``--compile auto`` then compiles even a small raster (25 windows of
an RSP network save more than a warm compile costs). The plugin's environment check has a button that runs it.

Events (JSON lines, like ``predict``): ``start`` (``model``, ``arch``, ``device``, ``precision``, ``batch_size``,
``tile``), ``status`` (compiling), ``done`` (``key``, ``eager_s``, ``compiled_s`` per window, ``compile_s``,
``cache``: ``"cold"`` or ``"warm"`` before this run). SIGINT/SIGTERM end it within a second or two, exit 130.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import numpy as np

from engine import compile_plan, events, options
from engine.errors import ParameterError
from engine.events import EXIT_OK, EventCallback
from engine.precision import PRECISIONS, resolve_precision

EAGER_BATCHES = 2
COMPILED_BATCHES = 2


def warmup(
    model_path: str,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    tile: int | None = None,
    exact: bool = False,
    threads: int | None = None,
    on_event: EventCallback | None = None,
    cancel: threading.Event | None = None,
    measure: bool = True,
) -> dict[str, Any]:
    """Compile ``model_path``'s network for runs with these options and record the measurements.

    Args:
        model_path: model file.
        device: see :func:`engine.inference.select_device`.
        batch_size: the runs' ``--batch-size``.
        precision: the runs' ``--precision`` (resolved as a default ``predict`` run resolves it).
        tile: the runs' ``--tile`` (default: the model file's).
        exact: the runs' ``--exact``.
        threads: ``torch.set_num_threads``.
        on_event: receives the events.
        cancel: set to stop (:class:`engine.errors.CancelledError`).
        measure: also time eager and compiled batches (False: compile only, what a run does in a child process
            before compiling from the warm cache).

    Returns:
        the ``done`` event's fields.

    Raises:
        ParameterError: no C++ compiler, bad options. engine.model_file.ModelFileError: bad model file.
    """
    from engine.inference import call_abandonable, cpp_compiler, load_network, run_windows
    from engine.model_file import read_model_info
    from engine.models import ARCHS

    emit = on_event or (lambda e: None)
    if batch_size is not None and batch_size < 1:
        raise ParameterError(f"--batch-size must be >= 1, got {batch_size}")
    batch_size = options.batch_size_for(batch_size, exact)
    if precision not in PRECISIONS:
        raise ParameterError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    info = read_model_info(model_path)
    size = tile or info.tile_size
    model, dev = call_abandonable(
        lambda: load_network(model_path, device, threads=threads, exact=exact, compile_mode="off", info=info),
        cancel,
        "rsp-load",
    )
    if dev.type == "cpu" and cpp_compiler() is None:
        raise ParameterError("compiling needs a C++ compiler (g++): install one (Debian: apt install g++)")
    spec = ARCHS.get(info.arch)
    prec = resolve_precision(precision, dev.type, spec.bf16_agreement if spec else None, exact=exact)
    key = compile_plan.graph_key(info.arch, info.num_classes, size, batch_size, prec, exact, dev.type)
    fields = {"model": model_path, "arch": info.arch, "device": str(dev), "precision": prec}
    emit(events.event(events.START, **fields, batch_size=batch_size, tile=size))
    batch = np.random.default_rng(0).standard_normal((batch_size, len(info.bands), size, size)).astype(np.float32)

    def best_of(net: Any, n: int) -> float:
        best = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            call_abandonable(lambda: run_windows(net, batch, dev, prec), cancel)
            best = min(best, time.perf_counter() - t0)
        return best / batch_size

    eager_s = best_of(model, EAGER_BATCHES) if measure else None
    import torch

    was_warm = bool({"cold_compile_s", "warm_compile_s"} & set(compile_plan.read_registry().get(key, {})))
    emit(events.event(events.STATUS, message=f"compiling the network for {key}"))
    compiled = torch.compile(model, dynamic=False)
    t0 = time.perf_counter()
    call_abandonable(lambda: run_windows(compiled, batch, dev, prec), cancel, "rsp-compile")
    first = time.perf_counter() - t0
    compiled_s = best_of(compiled, COMPILED_BATCHES) if measure else None
    compile_s = max(first - (compiled_s or 0.0) * batch_size, 0.1)
    cost = "warm_compile_s" if was_warm else "cold_compile_s"
    compile_plan.record(key, eager_s=eager_s, compiled_s=compiled_s, **{cost: compile_s})
    done = {
        "key": key,
        "eager_s": None if eager_s is None else round(eager_s, 3),
        "compiled_s": None if compiled_s is None else round(compiled_s, 3),
        "compile_s": round(compile_s, 1),
        "cache": "warm" if was_warm else "cold",
    }
    emit(events.event(events.DONE, **fields, **done))
    return done


def add_parser(sub: Any) -> None:
    """Add the ``warmup`` subcommand to the argparse subparsers ``sub``."""
    p = sub.add_parser(
        "warmup",
        help="compile a model's network ahead of time (makes --compile auto pay off on small rasters)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--model", required=True, help="model file (.rspmodel)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    options.add_window_options(p, blend=False, compile=False)  # the runs' values: the graph compiled for them
    p.add_argument("--tile", type=int, help="the runs' --tile (default: the model file's)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--compile-only", action="store_true", help="compile only; no timing batches (nothing measured)")
    p.add_argument("--debug", action="store_true", help="debug logs and tracebacks on stderr")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """``python -m engine warmup`` under the event-stream contract (:func:`engine.console.run_cancellable`)."""
    from engine.console import run_cancellable

    def work(emit: EventCallback, cancel: threading.Event) -> int:
        warmup(
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
            tile=args.tile,
            exact=args.exact,
            threads=args.threads,
            on_event=emit,
            cancel=cancel,
            measure=not args.compile_only,
        )
        return EXIT_OK

    return run_cancellable(work, debug=args.debug, cancelled_message="cancelled; nothing recorded")
