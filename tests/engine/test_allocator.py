"""engine.allocator: a process that keeps freed memory faults far fewer pages when it allocates the same blocks
again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocate and free a 96 MB tensor twenty times (torch, as in a forward) in a worker thread, as the engine does, and
# count the minor page faults of the last five rounds (the first rounds fault their pages in either way: measured, the
# kept heap stops growing after eight).
PROBE = """
import json, resource, sys, threading
from engine.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
faults = []
def work():
    for i in range(20):
        if i == 15:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        x = torch.empty(24 * 1024 * 1024)
        x.fill_(1.0)
        del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
t = threading.Thread(target=work)
t.start(); t.join()
print(json.dumps({"applied": applied, "faults": faults[1] - faults[0]}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_new_page_faults() -> None:
    default, kept = probe("default"), probe("keep")
    pages = 96 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert kept["applied"] is True
    assert default["faults"] >= 4 * pages  # glibc unmaps each freed block: every round faults its pages again
    assert kept["faults"] < pages  # the block is reused: five rounds fault less than one round's pages


def test_the_environment_can_leave_the_allocator_alone() -> None:
    assert probe("keep", RSP_KEEP_FREED_MEMORY="0")["applied"] is False


def test_python_m_engine_applies_it_before_running(tmp_path: Path) -> None:
    """The CLI entry point keeps freed memory (its --help still runs: the setting breaks nothing at start-up)."""
    source = (ROOT / "engine" / "__main__.py").read_text()
    assert source.index("keep_freed_memory()") < source.index("from engine.cli import main")
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "predict" in done.stdout
