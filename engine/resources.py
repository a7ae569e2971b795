"""Running within the machine's resources: free disk space before a run, and out-of-memory during it.

**Disk space** (:func:`check_disk_space`): before a run starts, the outputs' size is estimated from the region's
pixel count, as an upper bound (uncompressed; DEFLATE usually makes the files several times smaller, but a noisy
class map or a float confidence raster may not compress much): class raster 1 byte/pixel, confidence and
uncertainty 4 bytes/pixel, each plus 1/3 for overviews (or the COG's), plus the work-grid copy of a resampled or COG
run; polygons :data:`VECTOR_BYTES_PER_PIXEL` bytes/pixel (and the confidence raster they are made with when
``--vector`` comes without ``--confidence``). The sum per file system is compared with the free space of the outputs'
folders (``os.statvfs``); a resumed run counts what its partial rasters already hold. A run that is refused has
written nothing.

**Out of memory** (:class:`AdaptiveBatches`): a forward pass that fails for lack of memory (CUDA or CPU:
``torch.OutOfMemoryError``, a ``RuntimeError`` saying "out of memory" or "can't allocate memory", ``MemoryError``) is
retried with half the windows, down to one; the smaller size is kept for the rest of the run and each halving is a
``warning`` event. When a single window does not fit, :class:`OutOfMemoryError` names a smaller tile size to try.
After a halving, windows run in passes of another size, which changes their logits by float round-off only (about
1e-8): labels equal those of a run that never ran out of memory except at exact near-ties.

For tests, ``RSP_ENGINE_INJECT_OOM=N`` (or ``N@K``) makes every forward pass of more than ``N`` windows fail as out of
memory (from the ``K``-th batch on, counted from 0): a real failure path, injected at the allocation's place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import events
from engine.errors import EngineError

log = logging.getLogger("engine")

OVERVIEW_FACTOR = 4 / 3  # overviews 2, 4, 8… add 1/4 + 1/16 + … ≤ 1/3 of the full resolution
BYTES_PER_PIXEL = {events.LABELS: 1, events.CONFIDENCE: 4, events.UNCERTAINTY: 4}
VECTOR_BYTES_PER_PIXEL = 1.0  # a rough bound for the GeoPackage (class maps with polygons of a few pixels)
TILE_MULTIPLE = 32  # the networks downsample by 32: tile sizes to suggest are multiples of it
INJECT_OOM_ENV = "RSP_ENGINE_INJECT_OOM"
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


class ResourceError(EngineError):
    """The machine lacks a resource the run needs (disk space, memory)."""


class DiskSpaceError(ResourceError):
    """The outputs' folder has less free space than the outputs need."""

    hint = "free disk space or choose an output folder on another disk"


class OutOfMemoryError(ResourceError):
    """Even one window does not fit in memory."""

    hint = "run again with a smaller --tile"


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def estimate_output_bytes(
    outputs: dict[str, str], source_pixels: int, work_pixels: int, work_copy: bool
) -> dict[str, tuple[str, int]]:
    """Upper bound of each output's size on disk (see the module docstring).

    Args:
        outputs: ``{role: path}`` of the requested outputs.
        source_pixels: pixels of the region on the source grid (the outputs).
        work_pixels: pixels of the region on the work grid (the partial rasters).
        work_copy: the run writes a work-grid raster besides each output (resampled or COG runs).

    Returns:
        ``{role: (path, bytes)}``.
    """
    sizes = {}
    for role, path in outputs.items():
        if role == events.VECTOR:
            n = VECTOR_BYTES_PER_PIXEL * source_pixels
        else:
            per = BYTES_PER_PIXEL[role]
            n = per * source_pixels * OVERVIEW_FACTOR + (per * work_pixels if work_copy else 0)
        sizes[role] = (path, int(n))
    return sizes


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged process may still write in ``folder``'s file system."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_disk_space(sizes: dict[str, tuple[str, int]], already: int = 0) -> None:
    """Refuse to start when an output folder's file system has less free space than its outputs need.

    Args:
        sizes: :func:`estimate_output_bytes`.
        already: bytes the run's partial rasters already hold (a resumed run), subtracted from the need.

    Raises:
        DiskSpaceError: naming the folder, the estimate per output and the free space.
    """
    by_device: dict[int, tuple[str, int, list[str]]] = {}
    for role, (path, n) in sizes.items():
        folder = os.path.dirname(os.path.abspath(path))
        dev = os.stat(folder).st_dev
        first, total, parts = by_device.get(dev, (folder, 0, []))
        by_device[dev] = (first, total + n, [*parts, f"{role} {human_bytes(n)}"])
    for i, (folder, need, parts) in enumerate(by_device.values()):
        need = max(need - (already if i == 0 else 0), 0)
        free = free_bytes(folder)
        if free < need:
            raise DiskSpaceError(
                f"not enough free space in {folder}: the outputs may need up to {human_bytes(need)} "
                f"({', '.join(parts)}; uncompressed upper bound), {human_bytes(free)} free"
            )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA or CPU) rather than another error."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


def smaller_tile(tile: int) -> int | None:
    """A tile size to suggest after ``tile`` did not fit: half of it, a multiple of :data:`TILE_MULTIPLE`."""
    half = (tile // 2) // TILE_MULTIPLE * TILE_MULTIPLE
    return half if half >= TILE_MULTIPLE else None


def _injected_limit() -> tuple[int, int] | None:
    text = os.environ.get(INJECT_OOM_ENV, "").strip()
    if not text:
        return None
    limit, _, start = text.partition("@")
    return int(limit), int(start or 0)


class AdaptiveBatches:
    """Runs batches of windows through ``forward``, halving the batch on out-of-memory (see the module docstring).

    Every forward pass holds exactly the current batch size of windows: a shorter batch (the run's last, or one
    thinned by nodata) is padded with zero windows whose logits are dropped. A window's logits depend on how many
    windows share its pass (the CPU kernels change with the batch dimension: measured, up to 4e-8 between 1 and 4
    windows) but not on what the others hold, so this makes them independent of where a run starts: a resumed run
    and a sub-extent give bit-identical logits, labels and confidence.

    Args:
        forward: ``(B, C, t, t)`` float32 → ``(B, K, t, t)`` float32 logits.
        batch_size: windows per forward pass to start with.
        emit: receives the ``warning`` events.
        tile: the window size (named in the error when one window does not fit).
        device: the device's name, for messages.
    """

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
        emit: Callable[[dict[str, Any]], None],
        tile: int,
        device: str,
    ) -> None:
        self.forward, self.size, self.emit, self.tile, self.device = forward, batch_size, emit, tile, device
        self.batches = 0
        self.inject = _injected_limit()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits of every window of ``batch``, in order."""
        parts, i = [], 0
        while i < len(batch):
            chunk = batch[i : i + self.size]
            n = len(chunk)
            if n < self.size:  # every pass has the same number of windows: see the class docstring
                chunk = np.concatenate([chunk, np.zeros((self.size - n, *chunk.shape[1:]), chunk.dtype)])
            try:
                self._maybe_inject(len(chunk))
                out = self.forward(chunk)[:n]
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._release_cached_memory()
                self._shrink(len(chunk), exc)
                continue
            parts.append(out)
            i += n
        self.batches += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _shrink(self, failed: int, exc: BaseException) -> None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if failed <= 1:
            tile = smaller_tile(self.tile)
            raise OutOfMemoryError(
                f"one {self.tile}×{self.tile} window does not fit in memory on {self.device}: {first_line}",
                f"run again with --tile {tile}" if tile else "use another device or close other programs",
            ) from exc
        self.size = max(1, failed // 2)
        message = f"out of memory with {failed} windows per pass on {self.device}; retrying with {self.size}"
        log.warning("%s (%s)", message, first_line)
        self.emit(events.event(events.WARNING, message=message, batch_size=self.size, reason=first_line))

    def _maybe_inject(self, n: int) -> None:
        if self.inject is not None and n > self.inject[0] and self.batches >= self.inject[1]:
            raise RuntimeError(f"out of memory (injected by {INJECT_OOM_ENV}={os.environ[INJECT_OOM_ENV]})")

    def _release_cached_memory(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
