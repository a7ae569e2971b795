"""Injectable kill points for crash tests: SIGKILL this process at the N-th write of a kind.

Standard library only. Every place where the engine (or the fine-tuning trainer) changes a file calls
:func:`point` with the kind of write it is about to make; the call costs a dictionary update. Two environment
variables, read once, drive it:

- ``RSP_ENGINE_KILL_AT="kind:N[,kind:N...]"``: just before the N-th write (1-based) of ``kind``, the process sends
  itself ``SIGKILL``, as the out-of-memory killer or a power cut would stop it: no ``finally``, no ``atexit``, no
  buffered output flushed.
- ``RSP_ENGINE_FAIL_AT="kind:N[,...]"``: the N-th write of ``kind`` raises ``OSError(ENOSPC)`` instead, as a full
  disk makes a write fail (every later write of that kind fails too, as on a disk that stays full).
- ``RSP_ENGINE_HOLD_AT="kind:N[,...]"``: just before the N-th write of ``kind``, the writing thread waits until the
  process is asked to stop (SIGTERM or SIGINT: :func:`release`, called by the console's signal handler), then writes
  on. A test that must stop a run in the middle uses it instead of racing a timer: the run cannot finish first.
- ``RSP_ENGINE_WRITE_COUNTS=path``: at a normal exit, the number of writes of each kind is written to ``path`` (JSON),
  so that a test can choose N within what a run really does.

Kinds (:data:`KINDS`): ``tile_write`` (pixels handed to GDAL for a partial raster or an output), ``flush`` (a raster
closed or flushed), ``journal_write`` (the resume journal rewritten), ``fsync``, ``rename``, ``overview`` (overviews
or a COG copy), ``vector_write`` (polygons created or committed), ``checkpoint_write`` (a training checkpoint).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import signal
import threading

KILL_ENV = "RSP_ENGINE_KILL_AT"
FAIL_ENV = "RSP_ENGINE_FAIL_AT"
HOLD_ENV = "RSP_ENGINE_HOLD_AT"
COUNTS_ENV = "RSP_ENGINE_WRITE_COUNTS"
HOLD_LIMIT_S = 600.0  # a hold nobody releases ends after this long (a forgotten test cannot hang forever)
KINDS = ("tile_write", "flush", "journal_write", "fsync", "rename", "overview", "vector_write", "checkpoint_write")

_lock = threading.Lock()
_counts: dict[str, int] = {}
_targets: dict[str, int] | None = None
_failures: dict[str, int] = {}
_holds: dict[str, int] = {}
_released = threading.Event()


def _parse(text: str, env: str = KILL_ENV) -> dict[str, int]:
    targets = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, n = item.partition(":")
        if kind not in KINDS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"{env}: expected kind:N with kind in {', '.join(KINDS)} and N >= 1, got {item!r}")
        targets[kind] = int(n)
    return targets


def _load() -> dict[str, int]:
    global _targets
    if _targets is None:
        _targets = _parse(os.environ.get(KILL_ENV, ""))
        _failures.update(_parse(os.environ.get(FAIL_ENV, ""), FAIL_ENV))
        _holds.update(_parse(os.environ.get(HOLD_ENV, ""), HOLD_ENV))
        if os.environ.get(COUNTS_ENV):
            atexit.register(write_counts)
    return _targets


def write_counts() -> None:
    """Write the counts to :data:`COUNTS_ENV`'s file when it is set (also at a normal exit; call it before
    ``os._exit``)."""
    path = os.environ.get(COUNTS_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(counts(), f)


def point(kind: str) -> None:
    """Count a write of ``kind``; SIGKILL the process when it is the one :data:`KILL_ENV` names.

    Raises:
        OSError: ``ENOSPC``, from the write :data:`FAIL_ENV` names on.
    """
    targets = _load()
    with _lock:
        n = _counts[kind] = _counts.get(kind, 0) + 1
    if targets.get(kind) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    if _holds.get(kind) == n:
        _released.wait(HOLD_LIMIT_S)
    if kind in _failures and n >= _failures[kind]:
        raise OSError(errno.ENOSPC, f"No space left on device (injected by {FAIL_ENV})")


def release() -> None:
    """End every hold of :data:`HOLD_ENV`, now and later in this process (the process was asked to stop)."""
    _released.set()


def counts() -> dict[str, int]:
    """The writes of each kind counted so far in this process."""
    with _lock:
        return dict(_counts)
