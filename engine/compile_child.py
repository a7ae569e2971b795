"""A torch.compile of the network in a child process that can be killed at once (cancel while compiling).

Standard library only here; the child is ``python -m engine warmup --compile-only`` (:mod:`engine.warmup`). Its own
module so that :mod:`engine.inference` (which starts the child) and :mod:`engine.warmup` (the child's command, which
loads the network through :mod:`engine.inference`) do not import each other.
"""

from __future__ import annotations

import threading


def warm_in_child(
    model_path: str,
    *,
    device: str,
    batch_size: int,
    precision: str,
    tile: int,
    exact: bool,
    threads: int | None,
    cancel: threading.Event | None,
) -> bool:
    """Fill the compiler cache for a run by compiling in a child ``python -m engine warmup --compile-only``.

    A first compilation takes 1-2 minutes of Python work that holds the interpreter lock for a second or more at a
    time; in a child process it can be killed at once, so a run cancelled while compiling ends within a fraction of a
    second. The run then compiles from the warm cache in-process (≈ 5-10 s).

    Returns:
        True when the child compiled; False when it failed (logged; the run then stays eager).

    Raises:
        CancelledError: ``cancel`` was set (the child is killed first).
    """
    import logging
    import os
    import signal
    import subprocess
    import sys

    from engine.errors import CancelledError

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "engine", "warmup", "--compile-only", "--model", model_path, "--device", device]
    cmd += ["--batch-size", str(batch_size), "--precision", precision, "--tile", str(tile)]
    cmd += ["--exact"] if exact else []
    cmd += ["--threads", str(threads)] if threads else []
    log = logging.getLogger(__name__)
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        while True:
            try:
                _out, err = child.communicate(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    raise CancelledError("cancelled") from None
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if child.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        log.warning("compiling in a child process failed (%s); continuing without compilation", last)
        return False
    return True
