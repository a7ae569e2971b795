"""Hidden temporary names of the engine's outputs, their sidecar files, and the final rename.

Standard library only: the QGIS plugin imports this in QGIS's own Python to remove what a killed engine process
(SIGKILL, the out-of-memory killer) could not clean up itself. The rule is the contract between the two: a file is
written as ``.<stem>.tmp-<pid><ext>`` in the output's folder (same folder, so the final rename is atomic), then
renamed onto ``<stem><ext>``. Every writer of the engine (rasters, polygons, model files) follows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from engine import faults

# GDAL and SQLite companions a partial output may have next to it.
SIDECARS = (".aux.xml", ".ovr", "-journal", "-wal", "-shm")
# Sidecars that belong to a finished output and move with it (GDAL's category names and statistics).
KEPT_SIDECARS = (".aux.xml",)


def temporary_path(path: str, pid: int | None = None) -> str:
    """The hidden name next to ``path`` that process ``pid`` (default: this one) writes before the final rename."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.tmp-{os.getpid() if pid is None else pid}{ext}")


def remove_with_sidecars(paths: list[str]) -> list[str]:
    """Delete each of ``paths`` and its sidecars when present; return what was removed."""
    removed = []
    for path in paths:
        for candidate in [path, *(path + s for s in SIDECARS)]:
            if os.path.isfile(candidate):
                os.remove(candidate)
                removed.append(candidate)
    return removed


def commit(tmp: str, final: str) -> None:
    """Rename ``tmp`` (and its :data:`KEPT_SIDECARS`) onto ``final``, replacing ``final`` and its sidecars."""
    if os.path.exists(final):
        remove_with_sidecars([final])
    for sidecar in KEPT_SIDECARS:
        if os.path.exists(tmp + sidecar):
            faults.point("rename")
            os.replace(tmp + sidecar, final + sidecar)
    faults.point("rename")
    os.replace(tmp, final)


def stale_temporaries(paths: list[str], pid: int | None = None) -> list[str]:
    """Temporary files of ``paths`` written by processes other than ``pid`` (default: this one).

    Every file whose name is ``.<stem>.tmp-<number>`` followed by anything (the temporary output, its sidecars and
    scratch files) counts. Call it only while holding the outputs' lock (:class:`engine.journal.OutputLock`): no
    other live process then writes them, so they were left by a killed one.
    """
    own = os.getpid() if pid is None else pid
    found = []
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        pattern = re.compile(rf"\.{re.escape(os.path.splitext(name)[0])}\.tmp-(\d+)(?:[.-].*)?")
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for candidate in names:
            m = pattern.fullmatch(candidate)
            if m and int(m.group(1)) != own and os.path.isfile(os.path.join(folder, candidate)):
                found.append(os.path.join(folder, candidate))
    return sorted(set(found))


def fsync_folder(folder: str) -> None:
    """``fsync`` a folder so a rename or a new file in it survives a power cut (a no-op where unsupported)."""
    faults.point("fsync")
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str, data: Any, indent: int = 1, sort_keys: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that a crash leaves the old or the new content, never a mix.

    Temporary file, ``fsync``, ``os.replace``, ``fsync`` of the folder. The one atomic JSON writer of the engine and
    the training package (journals, summaries, measurements, metrics).

    Raises:
        OSError: the write failed (e.g. the disk is full); the previous file is then unchanged.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        faults.point("journal_write")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, sort_keys=sort_keys)
            f.flush()
            faults.point("fsync")
            os.fsync(f.fileno())
        faults.point("rename")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_folder(os.path.dirname(os.path.abspath(path)))
