"""engine.faults: the injection points that the crash tests drive, checked in fresh processes (module state)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from engine.faults import FAIL_ENV, HOLD_ENV, KILL_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HELD = """
import sys, threading
from engine import faults
from engine.console import run_cancellable

def work(emit, cancel):
    faults.point("flush")
    print("before", flush=True)
    faults.point("flush")  # held here until SIGTERM
    print("after", cancel.is_set(), flush=True)
    return 0

sys.exit(run_cancellable(work))
"""


def python(code: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **env})  # fmt: skip


def test_a_hold_waits_until_the_process_is_asked_to_stop() -> None:
    proc = python(HELD, **{HOLD_ENV: "flush:2"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "before"
    time.sleep(1.0)
    assert proc.poll() is None  # still held: it did not write on
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert out.splitlines()[0] == "after True"


def test_kill_and_fail_points_count_per_kind() -> None:
    code = (
        "from engine import faults\n"
        "faults.point('rename')\n"
        "try:\n    faults.point('fsync')\nexcept OSError as e:\n    print('failed', e.errno, flush=True)\n"
        "faults.point('rename')\nprint('not reached', flush=True)\n"
    )
    proc = python(code, **{KILL_ENV: "rename:2", FAIL_ENV: "fsync:1"})
    out, _ = proc.communicate(timeout=30)
    assert out.splitlines() == ["failed 28"]  # ENOSPC, then SIGKILL before the second rename
    assert proc.returncode == -signal.SIGKILL


def test_a_malformed_point_is_refused_with_the_variable_named() -> None:
    proc = python("from engine import faults\nfaults.point('flush')\n", **{HOLD_ENV: "flush:0"})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and f"{HOLD_ENV}: expected kind:N" in err
