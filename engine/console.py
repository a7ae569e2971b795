"""Running a command under the event-stream contract: JSON lines on stdout, signals, exit codes.

Shared by ``python -m engine predict`` and ``python -m training finetune|accuracy`` so every command the plugin runs
behaves the same: events as one JSON object per line on stdout (on a terminal, a progress bar on stderr replaces the
``progress`` lines), SIGINT/SIGTERM set a cancel event, and the outcome maps onto :mod:`engine.events`' exit codes:
``error`` event and 1 for any exception (no traceback unless ``debug``), ``cancelled`` and 130 on cancel.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from engine import faults
from engine.events import CANCELLED, DONE, ERROR, EXIT_CANCELLED, EXIT_ERROR, PROGRESS

log = logging.getLogger("engine")
BAR_WIDTH = 40


class EventPrinter:
    """Prints events as JSON lines; on a terminal, draws ``progress`` as a bar on stderr instead.

    Args:
        rank: only rank 0 prints (``error`` events print on every rank).
        bar: draw the bar on a terminal (False: ``progress`` events are dropped on a terminal, for commands that
            draw their own bar).
    """

    def __init__(self, rank: int = 0, bar: bool = True) -> None:
        self.tty = sys.stdout.isatty()
        self.rank, self.bar = rank, bar

    def __call__(self, event: dict[str, Any]) -> None:
        """Print one event."""
        if self.rank != 0 and event.get("event") != ERROR:
            return
        if self.tty and event.get("event") == PROGRESS:
            if self.bar:
                done, total = event["done"], max(event["total"], 1)
                fill = int(BAR_WIDTH * done / total)
                eta = event.get("eta_s")
                sys.stderr.write(
                    f"\r[{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {done}/{total}"
                    + (f" eta {eta:.0f}s" if eta is not None else "")
                    + " "
                )
                sys.stderr.flush()
            return
        if self.tty and event.get("event") in (DONE, ERROR):
            sys.stderr.write("\n")
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def run_cancellable(
    work: Callable[[Callable[[dict[str, Any]], None], threading.Event], int],
    debug: bool = False,
    emit: Callable[[dict[str, Any]], None] | None = None,
    cancelled_message: str = "cancelled; partial outputs removed",
) -> int:
    """Run ``work(emit, cancel)`` with SIGINT/SIGTERM setting ``cancel``; return its exit code.

    ``engine.errors.CancelledError`` → a ``cancelled`` event and 130; any other exception → an ``error`` event
    (:func:`engine.errors.error_event`: message, hint, kind) and 1. Signal handlers are restored afterwards.
    """
    from engine.errors import CancelledError, error_event

    emit = emit or EventPrinter()
    cancel = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("received %s: cancelling", signal.Signals(signum).name)
        cancel.set()
        faults.release()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return work(emit, cancel)
    except CancelledError as exc:
        emit({"event": CANCELLED, "message": cancelled_message, "hint": exc.hint})
        return EXIT_CANCELLED
    except Exception as exc:
        if debug:
            log.exception("failed")
        emit(error_event(exc))
        return EXIT_ERROR
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
