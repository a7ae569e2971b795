"""Run ``<interpreter> -m <module> ...`` as a QProcess and turn its JSON-lines stdout into Qt signals.

The module is ``engine`` by default (``python -m engine predict|import ...``); any module that speaks the engine's
contract runs the same way (``training finetune|accuracy``: JSON-lines ``start``/``status``/``progress``/``done``/
``error``/``cancelled`` events on stdout, exit codes 0/1/130, nothing under a requested name unless finished).
It runs in its own process so a crash, an out-of-memory kill or a CUDA error never takes QGIS down. The
command is an argument list (never a shell string). Cancel sends SIGTERM (the engine removes its partial files),
then kills after :data:`KILL_GRACE_MS`; afterwards any requested output that did not exist before the run is
deleted, so a cancelled or failed run leaves nothing under the requested names.

Resumable runs (:mod:`engine.journal`): a run that failed, crashed or was stopped with ``cancel(keep_unfinished=True)``
(QGIS closing) keeps the engine's hidden journal and partial rasters, so the Segment dialog can offer Resume; a plain
cancel discards them (the analyst asked to stop), and lock files a killed engine left are removed.

With a Qt event loop (the dialogs) the signals arrive by themselves; without one (a Processing algorithm runs in a
worker thread) :meth:`EngineRunner.poll` drives the run, as :func:`run_blocking` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from .engine_locator import engine_pythonpath, ensure_engine_importable
from .progress_stream import (
    DoneEvent,
    EngineEvent,
    ErrorEvent,
    LineSplitter,
    MalformedLine,
    OtherEvent,
    ProgressEvent,
    parse_line,
)

LOG_TAG = "RSP Segmentation"
ENGINE_MODULE = "engine"
KILL_GRACE_MS = 5000
START_TIMEOUT_MS = 30_000
POLL_MS = 100
STDERR_TAIL_CHARS = 4000


def log(message: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    """Write ``message`` to QGIS's Log Messages panel under the plugin's tab."""
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def engine_environment() -> QProcessEnvironment:
    """The subprocess environment: QGIS's, plus the engine's folder first on ``PYTHONPATH``, unbuffered output."""
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONPATH", engine_pythonpath(env.value("PYTHONPATH") or None))
    env.insert("PYTHONUNBUFFERED", "1")
    env.insert("HF_HUB_OFFLINE", "1")  # the engine never downloads weights
    for name in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "PYTHONHOME"):
        env.remove(name)
    return env


def remove_outputs(paths: list[str], pid: int | None = None, all_outputs: list[str] | None = None) -> list[str]:
    """Delete ``paths`` with their sidecars and, for engine process ``pid``, the hidden temporary files it writes
    before renaming them onto any of ``all_outputs`` (default ``paths``; a killed engine cannot remove them itself).
    Return what was removed."""
    ensure_engine_importable()
    from engine.atomic import remove_with_sidecars, temporary_path

    temporaries = [temporary_path(p, pid) for p in (paths if all_outputs is None else all_outputs)] if pid else []
    return remove_with_sidecars([*paths, *temporaries])


def crash_message(
    exit_code: int, crashed: bool, stderr_tail: str, what: str = "The segmentation engine"
) -> tuple[str, str]:
    """(message, hint) for a subprocess that ended without an ``error`` or ``done`` event; ``what`` names it."""
    last = [line for line in stderr_tail.strip().splitlines() if line.strip()]
    detail = last[-1] if last else "no error output"
    if crashed or exit_code < 0:
        message = f"{what} crashed ({detail})."
    elif exit_code in (137, -9):
        message = f"{what} was killed (out of memory?)."
    else:
        message = f"{what} stopped with exit code {exit_code}: {detail}"
    hint = (
        "QGIS is unaffected. Try a smaller batch size or the CPU device; "
        "the full engine log is in the Log Messages panel (RSP Segmentation)."
    )
    return message, hint


class EngineRunner(QObject):
    """One subprocess (``<interpreter> -m <module> <args>``) with its progress stream.

    Signals:
        progress(ProgressEvent): a progress line.
        finished_ok(DoneEvent): the engine reported ``done`` and exited 0 (with ``require_done_event=False``, a
            command such as ``import`` that may print no events succeeds on exit status 0 alone).
        failed(str, str): message and hint (an ``error`` event, a crash, a non-zero exit, or a failure to start).
        canceled(): the run was cancelled and its outputs removed.
        malformed(str): a stdout line that is not an event (also logged).
        status(str): a ``status`` event's message (a long step with no progress yet, such as compiling).
        other(OtherEvent): any event other than progress/done/error, ``status`` included (e.g. training's
            ``start`` with its classes and chip counts).
    """

    progress = pyqtSignal(object)
    finished_ok = pyqtSignal(object)
    failed = pyqtSignal(str, str)
    canceled = pyqtSignal()
    malformed = pyqtSignal(str)
    status = pyqtSignal(str)
    other = pyqtSignal(object)

    def __init__(
        self,
        interpreter: str,
        args: list[str],
        output_paths: list[str] | None = None,
        parent: QObject | None = None,
        module: str = ENGINE_MODULE,
        require_done_event: bool = True,
    ) -> None:
        super().__init__(parent)
        self.module = module
        self.require_done_event = require_done_event
        self.interpreter = interpreter
        self.args = list(args)
        self.output_paths = list(output_paths or [])
        self._preexisting = {p for p in self.output_paths if os.path.exists(p)}
        self._splitter = LineSplitter()
        self._stderr = ""
        self._done: DoneEvent | None = None
        self._error: ErrorEvent | None = None
        self._cancel_requested = False
        self._keep_unfinished = False
        self._ended = False
        self.process = QProcess(self)
        self.process.setProcessEnvironment(engine_environment())
        self.process.setProgram(interpreter)
        self.process.setArguments(["-m", module, *self.args])
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self._pid: int | None = None
        self.process.started.connect(self._on_started)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.process.kill)

    def start(self) -> None:
        """Start the subprocess (returns at once; the signals report what follows)."""
        log(f"starting: {self.interpreter} -m {self.module} {' '.join(self.args)}")
        self.process.start()

    def is_running(self) -> bool:
        """Whether the subprocess is starting or running."""
        return self.process.state() != QProcess.NotRunning

    def cancel(self, keep_unfinished: bool = False) -> None:
        """SIGTERM now, SIGKILL after the grace period; ``canceled`` is emitted when the process has ended.

        Args:
            keep_unfinished: keep the finished part of a segmentation for a later Resume (QGIS closing); False
                discards it.
        """
        if not self.is_running():
            return
        self._keep_unfinished = keep_unfinished
        self._cancel_requested = True
        self.process.terminate()
        self._kill_timer.start(KILL_GRACE_MS)

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called on the running process."""
        return self._cancel_requested

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the process ended (tests, Processing); True when it ended."""
        if self.is_running():
            self.process.waitForFinished(timeout_ms)
        return not self.is_running()

    def wait_for_started(self, timeout_ms: int = START_TIMEOUT_MS) -> bool:
        """Block until the process has started, without an event loop.

        Args:
            timeout_ms: how long to wait, in milliseconds.

        Returns:
            True when it started; otherwise ``failed`` has been emitted (the interpreter could not be started).
        """
        if self.process.waitForStarted(timeout_ms):
            return True
        self._on_error(QProcess.FailedToStart)
        return False

    def poll(self, timeout_ms: int = POLL_MS) -> bool:
        """Drive the run one step without an event loop (a Processing algorithm's worker thread).

        Waits up to ``timeout_ms`` for output and handles what arrived (``progress``/``status``/``malformed`` are
        emitted). After :meth:`cancel`, it first waits up to :data:`KILL_GRACE_MS` for the process to end and kills
        it if it has not. Once the process has ended, the run's end is delivered (``finished_ok``, ``failed`` or
        ``canceled``, exactly once, with the usual clean-up) if the event loop has not delivered it already.

        Args:
            timeout_ms: the longest wait for new output, in milliseconds.

        Returns:
            True while the process is still running (call again), False once the run has ended.
        """
        if self.is_running():
            if self._cancel_requested and not self.process.waitForFinished(KILL_GRACE_MS):
                self.process.kill()
            self.process.waitForReadyRead(timeout_ms)
            self._read_stdout()
            self._read_stderr()
        if self.is_running():
            return True
        if not self._ended:
            self._on_finished(self.process.exitCode(), self.process.exitStatus())
        return False

    # -- stream handling -------------------------------------------------------------------------------------------

    def _handle(self, event: EngineEvent | None) -> None:
        if event is None:
            return
        if isinstance(event, ProgressEvent):
            self.progress.emit(event)
        elif isinstance(event, DoneEvent):
            self._done = event
        elif isinstance(event, ErrorEvent):
            self._error = event
        elif isinstance(event, OtherEvent) and event.name == "status":
            log(f"engine: {event.raw.get('message', '')}")
            self.status.emit(str(event.raw.get("message", "")))
        elif isinstance(event, OtherEvent) and event.name == "warning":
            log(f"engine: {event.raw.get('message', '')}", Qgis.Warning)
        if isinstance(event, OtherEvent):
            self.other.emit(event)
        elif isinstance(event, MalformedLine):
            log(f"ignored engine output line ({event.reason}): {event.text[:300]}", Qgis.Warning)
            self.malformed.emit(event.text)

    def _read_stdout(self) -> None:
        for line in self._splitter.feed(bytes(self.process.readAllStandardOutput())):
            self._handle(parse_line(line))

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.strip():
                log(f"engine: {line}")
        self._stderr = (self._stderr + text)[-STDERR_TAIL_CHARS:]

    def _on_started(self) -> None:
        self._pid = int(self.process.processId()) or None

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart and not self._ended:
            self._ended = True
            self.failed.emit(
                f"Could not start the engine interpreter: {self.interpreter}",
                "Set a Python interpreter with torch in Settings / Check environment.",
            )

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        for line in self._splitter.flush():
            self._handle(parse_line(line))
        if self._ended:
            return
        self._ended = True
        crashed = exit_status == QProcess.CrashExit
        if self._cancel_requested:
            self._cleanup()
            log("run cancelled")
            self.canceled.emit()
        elif self._error is not None:
            self._cleanup()
            self.failed.emit(self._error.message, self._error.hint)
        elif exit_code == 0 and not crashed and (self._done is not None or not self.require_done_event):
            self.finished_ok.emit(self._done or DoneEvent({}))
        else:
            self._cleanup()
            what = "The training run" if self.module == "training" else "The segmentation engine"
            message, hint = crash_message(exit_code, crashed, self._stderr, what)
            log(f"{message}\n{self._stderr}", Qgis.Critical)
            self.failed.emit(message, hint)

    def _cleanup(self) -> None:
        removed = remove_outputs(
            [p for p in self.output_paths if p not in self._preexisting], self._pid, self.output_paths
        )
        if self.module == ENGINE_MODULE:
            from engine.journal import discard, remove_debris, remove_stale_locks

            if self._cancel_requested and not self._keep_unfinished:
                for path in self.output_paths:
                    removed += discard(path)
            removed += remove_debris(self.output_paths)
            removed += remove_stale_locks(self.output_paths)
        if removed:
            log(f"removed partial outputs: {', '.join(removed)}")


class EngineRunError(Exception):
    """The engine run did not produce outputs; ``hint`` says what to try, ``canceled`` marks a user cancel."""

    def __init__(self, message: str, hint: str = "", canceled: bool = False) -> None:
        super().__init__(f"{message} {hint}".strip())
        self.message = message
        self.hint = hint
        self.canceled = canceled


def run_blocking(
    interpreter: str,
    args: list[str],
    on_progress: Callable[[ProgressEvent], None],
    is_canceled: Callable[[], bool],
    output_paths: list[str] | None = None,
    poll_ms: int = POLL_MS,
    module: str = ENGINE_MODULE,
    on_status: Callable[[str], None] | None = None,
) -> DoneEvent:
    """Run ``<interpreter> -m <module> <args>`` to the end without an event loop (Processing runs in a worker thread).

    Args:
        interpreter: the Python interpreter.
        args: the arguments after ``-m <module>`` (e.g. ``predict --model ...``).
        on_progress: called with each progress event.
        is_canceled: polled every ``poll_ms``; True cancels the run (SIGTERM, then SIGKILL after the grace period).
        output_paths: the run's requested outputs, removed when it fails or is cancelled (see :class:`EngineRunner`).
        poll_ms: how often ``is_canceled`` is asked, in milliseconds.
        module: the module run with ``-m`` (``engine`` by default; e.g. ``training``).
        on_status: called with each ``status`` event's message (e.g. a Processing feedback's ``pushInfo``).

    Returns:
        The ``done`` event.

    Raises:
        EngineRunError: the engine failed, crashed or was cancelled (``canceled`` attribute True).
    """
    runner = EngineRunner(interpreter, args, output_paths, module=module)
    outcome: dict[str, object] = {}
    runner.progress.connect(on_progress)
    if on_status is not None:
        runner.status.connect(on_status)
    runner.finished_ok.connect(lambda event: outcome.setdefault("done", event))
    runner.failed.connect(lambda message, hint: outcome.setdefault("failed", (message, hint)))
    runner.canceled.connect(lambda: outcome.setdefault("canceled", True))
    runner.start()
    runner.wait_for_started()
    running = True
    while running:
        if is_canceled() and not runner.cancel_requested:
            runner.cancel()
        running = runner.poll(poll_ms)
    if "done" in outcome:
        return outcome["done"]  # type: ignore[return-value]
    if "canceled" in outcome:
        raise EngineRunError("The run was cancelled.", "", canceled=True)
    failed = outcome.get("failed", ("The engine failed.", ""))
    assert isinstance(failed, tuple)
    raise EngineRunError(str(failed[0]), str(failed[1]))
