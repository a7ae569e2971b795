"""What the plugin's Processing algorithms share: their toolbox entry, and running a subprocess under Processing.

Owns :class:`RspAlgorithm`, the base of every algorithm of the provider (id, name and group are class attributes; the
help shown next to the parameters is the class docstring; Processing gets a fresh instance per execution), the checks
every algorithm makes before a run (:func:`raster_file`, :func:`check_parameters`: what is wrong becomes a
``QgsProcessingException`` that says what to fix), and :func:`run_with_feedback`, which runs ``<interpreter> -m <module>
<args>`` to the end without an event loop (:func:`.engine_runner.run_blocking`): the command line and the subprocess's
``status`` messages go to the Processing log, its progress to the progress bar, Cancel in Processing stops it, and a
failure becomes a ``QgsProcessingException`` with the subprocess's message and hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingFeedback

from . import plugin_settings
from .engine_runner import ENGINE_MODULE, EngineRunError, run_blocking
from .layer_inputs import layer_file_path, layer_gdal_name
from .parameters import CheckedParameters
from .progress_stream import DoneEvent, ProgressEvent


class RspAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm of the plugin's provider.

    A subclass sets the class attributes below; its docstring, written for the analyst, is the help Processing shows
    next to the parameters.
    """

    ID = ""  # the algorithm's id within the provider (``rspsegmentation:<ID>``)
    DISPLAY_NAME = ""  # the name shown in the Processing toolbox
    GROUP = ""  # the toolbox group's name; its id is the name in lower case

    def name(self) -> str:
        """The algorithm's id within the provider."""
        return self.ID

    def displayName(self) -> str:
        """The name shown in the Processing toolbox."""
        return self.DISPLAY_NAME

    def group(self) -> str:
        """The toolbox group's name."""
        return self.GROUP

    def groupId(self) -> str:
        """The toolbox group's id."""
        return self.GROUP.lower()

    def shortHelpString(self) -> str:
        """The help shown next to the parameters: the class docstring as one paragraph (Processing would show each
        of its lines as a paragraph)."""
        return " ".join((type(self).__doc__ or "").split())

    def createInstance(self) -> RspAlgorithm:
        """A fresh instance (Processing runs each execution on its own copy)."""
        return type(self)()


def raster_file(layer: Any, what: str) -> str:
    """The GDAL-readable file (or ``/vsi...`` name, e.g. a remote COG) behind a raster-layer parameter's layer.

    Args:
        layer: the layer (``parameterAsRasterLayer``).
        what: the parameter in the error message, e.g. ``"class raster"``.

    Raises:
        QgsProcessingException: the layer is not stored in a file GDAL reads.
    """
    path = layer_file_path(layer) or layer_gdal_name(layer)
    if not path:
        raise QgsProcessingException(f"The {what} must be a GDAL raster: a file, or a /vsicurl/ or /vsizip/ name.")
    return path


def check_parameters(params: CheckedParameters) -> None:
    """Raise every problem of a run's parameters as one ``QgsProcessingException`` (a line each), if any."""
    problems = params.problems()
    if problems:
        raise QgsProcessingException("\n".join(problems))


def run_with_feedback(
    args: list[str],
    outputs: list[str],
    feedback: QgsProcessingFeedback,
    module: str = ENGINE_MODULE,
    progress_text: Callable[[ProgressEvent], str] | None = None,
) -> DoneEvent | None:
    """Run ``<interpreter> -m <module> <args>`` to the end, reporting to ``feedback``.

    Args:
        args: the arguments after ``-m <module>``.
        outputs: the run's requested outputs (removed when it fails or is cancelled).
        feedback: the algorithm's feedback: the log, the progress bar and Cancel.
        module: the module run with ``-m`` (``engine``, or ``training``).
        progress_text: the progress bar's text for a progress event ("" leaves it as it is), if any.

    Returns:
        The ``done`` event; None when the run was cancelled (nothing under the requested names was kept).

    Raises:
        QgsProcessingException: the run failed (the subprocess's message and hint).
    """
    interpreter = plugin_settings.interpreter()
    feedback.pushInfo(f"{interpreter} -m {module} {' '.join(args)}")

    def on_progress(event: ProgressEvent) -> None:
        feedback.setProgress(event.percent)
        text = progress_text(event) if progress_text is not None else ""
        if text:
            feedback.setProgressText(text)

    try:
        return run_blocking(
            interpreter, args, on_progress, feedback.isCanceled, outputs, module=module, on_status=feedback.pushInfo
        )
    except EngineRunError as exc:
        if exc.canceled:
            return None
        raise QgsProcessingException(f"{exc.message} {exc.hint}".strip()) from exc
