"""The C allocator of a command-line process: keep freed memory for reuse instead of giving it back to the kernel.

A network's forward allocates and frees activations of tens to hundreds of MB per layer. glibc serves blocks above
its mmap threshold (at most 32 MB) with fresh ``mmap`` calls and unmaps them on ``free``, trims its heap when the top
grows free, and gives a thread's arena back to the kernel when it empties: every batch then touches new pages, which
the kernel must fault in and zero. Measured on one whole ``python -m engine predict --blend reference --precision
fp32`` run (RSP-R50, real 2048² RGB, 25 windows in batches of 5, 2 threads, Intel Xeon with AVX-512 and AMX, torch
2.13.0+cpu, glibc 2.36): 8.4 million page faults, 16-22 s of system time, 38.8-44.5 s; with the three settings below
0.8-1.0 million faults, 1.8-4.7 s of system time, 31.2-32.1 s (labels identical), peak RSS 3.4-3.9 GB (was 3.3-3.6).
Without the single arena (the forward runs in a worker thread, whose arena glibc unmaps when it empties) nothing
changed.

:func:`keep_freed_memory` sets three ``mallopt`` parameters: one arena for all threads, no ``mmap`` for large
blocks, no trimming. Call it only at the start of a process that ends
with its work (``python -m engine``, ``python -m training``): the memory a run freed stays with the process until it
exits (its resident size does not shrink after a peak). Never in QGIS's own process: the plugin runs the engine as
a child process. ``RSP_KEEP_FREED_MEMORY=0`` in the environment leaves the allocator as it is; so does any C
library other than glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_NEVER = 2**31 - 1  # mallopt takes an int: the largest threshold it can express


def keep_freed_memory() -> bool:
    """One glibc arena, no ``mmap`` for large blocks and no heap trimming in this process; True when all were set."""
    if os.environ.get("RSP_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = all(
            libc.mallopt(param, value) == 1
            for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_NEVER))
        )
    except (OSError, AttributeError) as exc:  # no libc.so.6 or no mallopt: keep the defaults
        log.debug("mallopt unavailable: %s", exc)
        return False
    return done
