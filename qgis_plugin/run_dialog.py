"""What the Segment layer and Train model dialogs share: running one subprocess at a time, and its controls.

Owns a run's lifecycle, from the Run button to the subprocess's end: the message bar where problems that stop a run
are shown, the progress bar and status line, the Run / Cancel / Close buttons (Run while idle, Cancel while running),
the :class:`.engine_runner.EngineRunner` with its :class:`QgsProxyProgressTask` in QGIS's task bar, cancelling, the
end of a run (a failure or a cancel told in QGIS's message bar, the task closed, Run enabled again), and stopping a
running subprocess when the plugin unloads (:meth:`RunDialog.shutdown`). Closing the dialog only hides it: a run goes
on and still reports its end.

A dialog subclasses :class:`RunDialog` and says what its run is: the checked parameters
(:meth:`RunDialog._checked_parameters`), the runner for them (:meth:`RunDialog._new_runner`), the task's title, the
progress text, what to do with the result (:meth:`RunDialog._on_done`), and the texts below.

A dialog may also start a *side run* that follows from its own (:meth:`RunDialog.start_side_run`: "Where to label
next" after a segmentation or a training run): a :class:`SideRun` says everything about it, and it uses the same
controls (progress, Cancel, the task bar), one subprocess at a time.
"""

from __future__ import annotations

from typing import Any, Protocol

from qgis.core import Qgis, QgsApplication, QgsProxyProgressTask
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .engine_runner import EngineRunner
from .parameters import InvalidParametersError
from .progress_stream import DoneEvent, ProgressEvent

MESSAGE_TITLE = "RSP Segmentation"  # QGIS's message bar
MESSAGE_DURATION_S = 10  # how long a failure stays in QGIS's message bar


class SideRun(Protocol):
    """A run a dialog starts besides its own (:meth:`RunDialog.start_side_run`), described completely.

    Attributes:
        task_title: its name in QGIS's task manager.
        starting_text: the status line while its subprocess starts.
        failed_title: QGIS's message bar title when it fails.
        cancelled_text: the status line after a cancel.
    """

    task_title: str
    starting_text: str
    failed_title: str
    cancelled_text: str

    def new_runner(self, parent: Any) -> EngineRunner:
        """The runner, not started."""

    def progress_text(self, event: ProgressEvent) -> str:
        """The status line for a progress event."""

    def on_done(self, event: DoneEvent) -> str:
        """Use the result (e.g. add a layer); return the status line to show."""

    def on_end(self) -> None:
        """The run has ended, whatever the outcome (release what it held)."""


class RunDialog(QDialog):
    """A non-modal dialog that runs one subprocess at a time (what it owns: see the module docstring).

    Attributes:
        runner: the running subprocess, None while idle.
        task: the run's entry in QGIS's task manager, None while idle.
    """

    FAILED_TITLE = "Run failed"  # QGIS's message bar title when a run fails
    STARTING_TEXT = "Starting…"  # the status line while the subprocess starts
    CANCELLED_TEXT = "Cancelled; no output was kept."  # the status line after a cancel
    CANCELLED_MESSAGE = "Cancelled; no output was kept."  # QGIS's message bar after a cancel

    def __init__(self, iface: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.runner: EngineRunner | None = None
        self.task: QgsProxyProgressTask | None = None
        self._run_params: Any = None  # the parameters of the current (or last) run
        self._side: SideRun | None = None  # the side run in progress, if any

    # -- what a dialog says about its run -------------------------------------------------------------------------

    def _checked_parameters(self) -> Any:
        """The run's parameters, checked (and its inputs written, where it has any to write).

        Raises:
            InvalidParametersError: what to fix, one problem per line.
        """
        raise NotImplementedError

    def _save_settings(self) -> None:
        """Remember the dialog's choices (called when a run starts)."""

    def _new_runner(self, params: Any) -> EngineRunner:
        """The runner for ``params``, not started (the base class connects its progress and end)."""
        raise NotImplementedError

    def _task_title(self, params: Any) -> str:
        """The run's name in QGIS's task manager."""
        raise NotImplementedError

    def _progress_text(self, event: ProgressEvent) -> str:
        """The status line for a progress event."""
        raise NotImplementedError

    def _on_done(self, event: DoneEvent) -> None:
        """The run finished: show and use its result (start with ``self._finish(True)``)."""
        raise NotImplementedError

    def _cancelled_text(self) -> str:
        """The status line after a cancel (:attr:`CANCELLED_TEXT` unless a dialog has more to say)."""
        return self.CANCELLED_TEXT

    # -- widgets ---------------------------------------------------------------------------------------------------

    def _dialog_layout(self) -> QVBoxLayout:
        """The dialog's layout, holding the message bar (``message_bar``) where problems that stop a run are shown."""
        layout = QVBoxLayout(self)
        self.message_bar = QgsMessageBar(self)
        layout.addWidget(self.message_bar)
        return layout

    def _add_run_controls(
        self, layout: QVBoxLayout, left_button: QPushButton, below_status: QWidget | None = None
    ) -> None:
        """Add the progress bar, the status line, ``below_status`` and the button row to ``layout``.

        Args:
            layout: the dialog's layout (from :meth:`_dialog_layout`).
            left_button: the dialog's own button, alone on the left of Run, Cancel and Close.
            below_status: a widget shown between the status line and the buttons, if any.
        """
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        self.status_label.setObjectName("statusLabel")
        layout.addWidget(self.status_label)
        if below_status is not None:
            layout.addWidget(below_status)
        self.run_button = QPushButton("Run", self)
        self.run_button.setObjectName("runButton")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close", self)
        buttons = QHBoxLayout()
        buttons.addWidget(left_button)
        buttons.addStretch(1)
        for button in (self.run_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)

    def _update_enabled(self, *_args: Any) -> None:
        """Run while idle, Cancel while running (a dialog adds its own widgets' states)."""
        running = self.runner is not None
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    # -- running ---------------------------------------------------------------------------------------------------

    def run(self) -> bool:
        """Check the parameters and start the subprocess; False (with the problems shown) when the run cannot start."""
        if self.runner is not None:
            return False
        try:
            params = self._checked_parameters()
        except InvalidParametersError as exc:
            self.message_bar.pushWarning("Cannot run", str(exc).replace("\n", " "))
            self.status_label.setText(str(exc))
            return False
        self._save_settings()
        self._run_params = params
        self._start(self._new_runner(params), self._task_title(params), self.STARTING_TEXT)
        return True

    def start_side_run(self, side: SideRun) -> bool:
        """Start ``side`` with the dialog's controls; False when a run is in progress (one subprocess at a time)."""
        if self.runner is not None:
            return False
        self._side = side
        self._start(side.new_runner(self), side.task_title, side.starting_text)
        return True

    def _start(self, runner: EngineRunner, title: str, starting_text: str) -> None:
        self.runner = runner
        self.runner.progress.connect(self._on_progress)
        self.runner.status.connect(self.status_label.setText)
        self.runner.finished_ok.connect(self._on_run_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.canceled.connect(self._on_canceled)
        self.task = QgsProxyProgressTask(title)
        QgsApplication.taskManager().addTask(self.task)
        self.progress.setValue(0)
        self.status_label.setText(starting_text)
        self.runner.start()
        self._update_enabled()

    def cancel(self) -> None:
        """Cancel the running subprocess (SIGTERM, SIGKILL after a grace period); its partial outputs are removed."""
        if self.runner is not None:
            self.status_label.setText("Cancelling…")
            self.runner.cancel()

    def shutdown(self) -> None:
        """Cancel a running subprocess and wait for it (plugin unload / QGIS exit); a segmentation's finished part is
        kept for Resume."""
        if self.runner is not None:
            self.runner.cancel(keep_unfinished=True)
            self.runner.wait(10_000)

    def _on_progress(self, event: ProgressEvent) -> None:
        self.progress.setValue(int(event.percent))
        self.status_label.setText(self._side.progress_text(event) if self._side else self._progress_text(event))
        if self.task is not None:
            self.task.setProxyProgress(event.percent)

    def _finish(self, ok: bool) -> None:
        """The run has ended: close its task, release the runner, enable Run (a dialog adds its own clean-up)."""
        if self.task is not None:
            self.task.finalize(ok)
            self.task = None
        if self.runner is not None:
            self.runner.deleteLater()
        self.runner = None
        side, self._side = self._side, None
        if side is not None:
            side.on_end()
        self._update_enabled()

    def _on_run_done(self, event: DoneEvent) -> None:
        side = self._side
        if side is None:
            self._on_done(event)
            return
        self._finish(True)
        self.progress.setValue(100)
        self.status_label.setText(side.on_done(event))

    def _on_failed(self, message: str, hint: str) -> None:
        title = self._side.failed_title if self._side else self.FAILED_TITLE
        self._finish(False)
        self.status_label.setText(f"{message}\n{hint}".strip())
        self.iface.messageBar().pushMessage(title, f"{message} {hint}", Qgis.Critical, MESSAGE_DURATION_S)

    def _on_canceled(self) -> None:
        side = self._side
        self._finish(False)
        self.progress.setValue(0)
        self.status_label.setText(side.cancelled_text if side else self._cancelled_text())
        self.iface.messageBar().pushInfo(MESSAGE_TITLE, side.cancelled_text if side else self.CANCELLED_MESSAGE)
