"""The resume journal of a run, the chunks of finished rows it lists, and the lock that keeps one run per output.

Standard library only: the QGIS plugin imports this module in QGIS's own Python to find an unfinished run for the
output the analyst chose (:func:`unfinished_run`) and to discard it (:func:`discard`).

Files next to the class raster ``<folder>/<name>`` (all hidden, none under a requested name):

- ``.<name>.resume.json``, the journal (:class:`Journal`): format, what was asked (input identity, model sha256,
  every option that changes pixels), the run's region rows, and the list of **chunks**: each a band of finished
  work-grid rows ``[first, end)`` written as its own small GeoTIFF per raster output (labels, confidence), closed,
  ``fsync``-ed and renamed onto its final name *before* the journal lists it. ``rows_done`` is the end of the last
  chunk. The journal is rewritten atomically (temporary file, ``fsync``, ``os.replace``, ``fsync`` of the folder),
  so a kill or a power cut leaves either the previous journal or the new one.
- ``.<stem>.tmp-resume-<first>-<end><ext>`` next to each raster output: one chunk (:func:`chunk_path`). A chunk is
  written once, under ``….part<ext>``, and never opened for writing again: the final outputs are assembled from the
  chunks (read only) at the end, and the chunks are removed only after the outputs carry their final names.
  Files with the chunk prefix that the journal does not list (a ``.part`` a kill interrupted, a chunk renamed just
  before a kill, an older format's partial raster) are debris: a run removes them before it writes.
- ``.<name>.lock``: held with ``fcntl.flock`` for the whole run (:class:`OutputLock`); the kernel releases it when
  the process dies, however it dies. A second run on the same output is refused at once.

Decisions:

- The journal is created when the network starts on the first window; an error or a cancel keeps it (and the
  chunks) only when at least one row is durable, so there is something to resume. Once every row is durable the
  journal stays until the outputs are renamed onto their requested names: a failure while finishing (overviews, COG,
  statistics, polygons) keeps everything, and ``--resume`` then only finishes again. Before the first rename the
  journal is marked ``committing``, so a run resumed after a kill between two renames may replace the outputs the
  killed run already renamed (they are its own).
- A run without ``--resume`` removes an unfinished run's files for its output and starts from the beginning, saying
  so in a log warning; ``--resume`` with no unfinished run starts from the beginning too (also said), so scripts
  may always pass it.
- A journal of another format, or one that cannot be parsed, is treated as no journal by a fresh run and refused by
  ``--resume`` (never guessed at).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from engine import faults
from engine.atomic import write_json as write_json_atomic
from engine.errors import OutputPathError, ParameterError

log = logging.getLogger("engine")

JOURNAL_FORMAT = "rsp-engine-resume/2"
JOURNAL_SUFFIX = ".resume.json"
LOCK_SUFFIX = ".lock"
PARTIAL_TAG = ".tmp-resume"
RESUME_ADVICE = "run again with --resume to continue, or without it to start afresh"  # the plugin rewords it


class ResumeError(ParameterError):
    """``--resume`` cannot continue the unfinished run (other input, model or options; damaged journal)."""

    hint = "run with the same input, model and options as the unfinished run, or without --resume to start again"


class RunLockedError(OutputPathError):
    """Another run is writing the same output right now."""

    hint = "wait for the other run to finish, or choose another output path"


def _hidden(path: str, suffix: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{suffix}")


def journal_path(output: str) -> str:
    """The journal of the run writing the class raster ``output``."""
    return _hidden(output, JOURNAL_SUFFIX)


def lock_path(output: str) -> str:
    """The lock file of ``output`` (see :class:`OutputLock`)."""
    return _hidden(output, LOCK_SUFFIX)


def chunk_prefix(output: str) -> str:
    """The path prefix shared by every chunk (and chunk debris) of the raster output ``output``."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{os.path.splitext(name)[0]}{PARTIAL_TAG}")


def chunk_path(output: str, first: int, end: int) -> str:
    """The chunk of work-grid rows ``[first, end)`` of the raster output ``output`` (a stable name: no process id)."""
    return f"{chunk_prefix(output)}-{first}-{end}{os.path.splitext(output)[1]}"


def part_path(chunk: str) -> str:
    """The name ``chunk`` is written under before it is complete (renamed onto ``chunk`` then)."""
    stem, ext = os.path.splitext(chunk)
    return f"{stem}.part{ext}"


def chunk_debris(outputs: list[str], keep: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Files with the chunk prefix of any of ``outputs`` that are not in ``keep``, and the journal's own temporary
    files (:func:`write_json_atomic`'s, left by a kill), with GDAL sidecars."""
    found = []
    kept = {os.path.abspath(p) for p in keep}
    for output in outputs:
        folder = os.path.dirname(os.path.abspath(output))
        starts = (os.path.basename(chunk_prefix(output)), os.path.basename(journal_path(output)) + ".tmp-")
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if name.startswith(starts) and path not in kept and os.path.isfile(path):
                    found.append(path)
    return sorted(set(found))


def fsync_file(path: str) -> None:
    """``fsync`` the file at ``path`` (its data reach the disk before this returns)."""
    faults.point("fsync")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The resume journal of one run (file layout and rules: see the module docstring).

    Args:
        path: the journal file.
        data: its content: ``format``, ``identity`` (what must match to resume), ``region_rows`` (``[first, end)``
            work-grid rows the run writes), ``chunks`` (``{"rows": [first, end], "files": {role: path}}`` in row
            order), ``rows_done`` (the last chunk's end), ``committing`` (the outputs are being renamed).
    """

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def load(cls, path: str) -> Journal:
        """Read the journal at ``path``.

        Raises:
            ResumeError: it cannot be read, is not JSON, or is of another format.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ResumeError(f"cannot read the resume journal {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ResumeError(f"{path} is not a resume journal of this engine (format {found!r}, expected "
                              f"{JOURNAL_FORMAT!r})")  # fmt: skip
        return cls(path, data)

    @classmethod
    def create(cls, path: str, identity: dict[str, Any], region_rows: tuple[int, int]) -> Journal:
        """Write a new journal (no row done yet) and return it."""
        data = {
            "format": JOURNAL_FORMAT,
            "identity": identity,
            "chunks": [],
            "committing": False,
            "region_rows": list(region_rows),
            "rows_done": region_rows[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        journal = cls(path, data)
        journal.save()
        return journal

    @property
    def rows_done(self) -> int:
        """The first work-grid row not durably written (the rows above it are)."""
        return int(self.data["rows_done"])

    @property
    def region_rows(self) -> tuple[int, int]:
        """``(first, end)`` work-grid rows of the run's region."""
        first, end = self.data["region_rows"]
        return int(first), int(end)

    @property
    def chunks(self) -> list[tuple[int, int, dict[str, str]]]:
        """``(first, end, {role: path})`` of the durable chunks, in row order."""
        return [(int(c["rows"][0]), int(c["rows"][1]), dict(c["files"])) for c in self.data["chunks"]]

    @property
    def files(self) -> list[str]:
        """Every chunk file the journal lists."""
        return [p for _first, _end, files in self.chunks for p in files.values()]

    @property
    def committing(self) -> bool:
        """Whether the run was renaming its outputs onto their requested names."""
        return bool(self.data.get("committing"))

    @property
    def has_rows(self) -> bool:
        """Whether at least one row is durable (there is something to resume)."""
        return self.rows_done > self.region_rows[0]

    def record_chunk(self, first: int, end: int, files: dict[str, str]) -> None:
        """List the chunk of rows ``[first, end)`` (call only once its files are complete, synced and renamed)."""
        if first != self.rows_done:
            raise ValueError(f"chunk rows {first}-{end} do not continue the durable rows (up to {self.rows_done})")
        self.data["chunks"].append({"rows": [int(first), int(end)], "files": dict(files)})
        self.data["rows_done"] = int(end)
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()

    def mark_committing(self) -> None:
        """Record that the outputs are about to be renamed onto their requested names."""
        self.data["committing"] = True
        self.save()

    def save(self) -> None:
        """Write the journal atomically (:func:`write_json_atomic`)."""
        write_json_atomic(self.path, self.data)

    def mismatches(self, identity: dict[str, Any]) -> list[str]:
        """What differs between this journal's identity and ``identity``, one ``"key: was X, now Y"`` per item."""
        old = self.data.get("identity", {})
        keys = sorted(set(old) | set(identity))
        return [f"{k}: was {old.get(k)!r}, now {identity.get(k)!r}" for k in keys if old.get(k) != identity.get(k)]


def unfinished_run(output: str) -> dict[str, Any] | None:
    """The unfinished run that wrote (part of) the class raster ``output``, or None.

    Returns:
        ``{"journal": path, "rows_done": n, "rows_total": m, "fraction": 0..1}`` (``rows_*`` on the work grid), or
        None when there is no readable journal whose chunks all exist.
    """
    path = journal_path(output)
    if not os.path.isfile(path):
        return None
    try:
        journal = Journal.load(path)
        first, end = journal.region_rows
        if not all(os.path.isfile(p) for p in journal.files):
            return None
    except (ResumeError, KeyError, TypeError, ValueError):
        return None
    done, total = journal.rows_done - first, end - first
    return {"journal": path, "rows_done": done, "rows_total": total, "fraction": done / total if total else 0.0}


def committing(output: str) -> bool:
    """Whether the unfinished run for ``output`` was killed while renaming its outputs (its journal says so)."""
    try:
        return Journal.load(journal_path(output)).committing
    except (ResumeError, KeyError, TypeError):
        return False


def run_files(output: str, others: list[str] | None = None) -> list[str]:
    """The hidden files an unfinished run for ``output`` may have left: the journal first, then chunks and debris.

    Args:
        output: the class raster.
        others: the run's other raster outputs (confidence), whose chunks sit next to them.
    """
    paths = [journal_path(output)]
    if os.path.isfile(paths[0]):
        with contextlib.suppress(ResumeError, KeyError, TypeError, AttributeError, ValueError, IndexError):
            paths += Journal.load(paths[0]).files
    return list(dict.fromkeys(paths + chunk_debris([output, *(others or [])])))


def discard(output: str, others: list[str] | None = None) -> list[str]:
    """Remove an unfinished run's journal, chunks and chunk debris (with GDAL sidecars); return what was removed."""
    from engine.atomic import remove_with_sidecars

    files = run_files(output, others)
    journal = files[0]
    removed = remove_with_sidecars(files[1:])
    if os.path.isfile(journal):  # last: a crash in between leaves a journal whose chunks are missing (ignored)
        os.remove(journal)
        removed.append(journal)
    return removed


def remove_debris(outputs: list[str]) -> list[str]:
    """Remove the chunk debris of ``outputs`` (files with their chunk prefix that no journal lists); return it.

    Call it only when no engine runs on them (after a killed run): a live run's unfinished chunk is debris too.
    """
    from engine.atomic import remove_with_sidecars

    listed: list[str] = []
    for output in outputs:
        with contextlib.suppress(ResumeError, KeyError, TypeError, ValueError, IndexError, OSError):
            if os.path.isfile(journal_path(output)):
                listed += Journal.load(journal_path(output)).files
    return remove_with_sidecars(chunk_debris(outputs, keep=listed))


def remove_stale_locks(outputs: list[str]) -> list[str]:
    """Remove the lock files of ``outputs`` that no process holds (left by a killed run); return what was removed."""
    import fcntl

    removed = []
    for path in sorted({lock_path(p) for p in outputs}):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.remove(path)
            removed.append(path)
        except OSError:
            pass  # held by a running engine: its lock
        finally:
            os.close(fd)
    return removed


class OutputLock:
    """An exclusive, non-blocking ``fcntl.flock`` on each output's lock file for the duration of a run.

    The lock files are removed when the run ends (a kill leaves them, unlocked: the next run takes them). A run that
    finds a lock held by another process is refused at once with :class:`RunLockedError`.

    Args:
        outputs: the run's requested output paths.
    """

    def __init__(self, outputs: list[str]) -> None:
        self.paths = sorted({lock_path(p) for p in outputs})
        self.fds: list[tuple[str, int]] = []

    def __enter__(self) -> OutputLock:
        """Take every lock (in sorted order, so two runs never wait on each other crosswise)."""
        try:
            for path in self.paths:
                self.fds.append((path, self._take(path)))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the locks and remove the lock files."""
        self.release()

    @staticmethod
    def _take(path: str) -> int:
        import fcntl

        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise OutputPathError(f"cannot lock {path}: {exc}") from exc
                holder = ""
                with contextlib.suppress(OSError, ValueError), open(path, encoding="utf-8") as f:
                    holder = f" (process {int(f.read().strip() or 0)})"
                output = os.path.join(os.path.dirname(path), os.path.basename(path)[1 : -len(LOCK_SUFFIX)])
                raise RunLockedError(f"another run is writing {output} right now{holder}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not removed by its last holder meanwhile
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)

    def release(self) -> None:
        """Remove the lock files and release the locks (removing first, so a waiting run retries a fresh file)."""
        for path, fd in reversed(self.fds):
            with contextlib.suppress(OSError):
                os.remove(path)
            os.close(fd)
        self.fds = []


@contextlib.contextmanager
def locked(outputs: list[str]) -> Iterator[None]:
    """``with locked(paths):`` holds :class:`OutputLock` on ``paths`` for the block."""
    with OutputLock(outputs):
        yield
