"""Failure families of the engine: one exception type each, with a message that says what to do.

:func:`error_event` turns any of them into the one-line ``error`` event of the CLI stream, with a hint. The exit
codes of ``python -m engine`` are stated in :mod:`engine.events` (re-exported here). Standard library only.
"""

from __future__ import annotations

from typing import Any

from engine.events import ERROR, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, event

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_ERROR",
    "EXIT_OK",
    "BandMismatchError",
    "CancelledError",
    "EngineError",
    "OutputPathError",
    "ParameterError",
    "RasterReadError",
    "error_event",
]


class ModelFileError(Exception):
    """A model file is missing, unreadable, corrupt, of a newer format version, or does not match its network.

    Defined here, below every layer; :mod:`engine.model_file` raises it and re-exports it."""


class EngineError(Exception):
    """Base of the engine's user-facing errors; ``hint`` says what to do (the class's, or one given for this case)."""

    hint = "run again with --debug for details"

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class RasterReadError(EngineError):
    """The input raster is missing, not readable by GDAL, or a window cannot be read."""

    hint = "check that --input names a GDAL-readable raster file (try `gdalinfo FILE`)"


class BandMismatchError(EngineError):
    """The raster's bands cannot feed the model's input bands (count or colour interpretation)."""

    hint = "map raster bands to the model's inputs with --bands, e.g. --bands 1,2,3"


class OutputPathError(EngineError):
    """An output exists (without --overwrite), its folder is missing or not writable, or writing failed."""

    hint = "choose another output path"


class ParameterError(EngineError):
    """A parameter is invalid (tile/stride, extent outside the raster, unknown blend mode, device not available)."""

    hint = "check the command-line options (python -m engine predict --help)"


class CancelledError(EngineError):
    """The run was cancelled (signal or cancel event); no output was left behind."""

    hint = "nothing to do: the run was cancelled on request and its partial outputs were removed"


def error_event(exc: BaseException) -> dict[str, Any]:
    """The ``{"event": "error", "message", "hint", "kind"}`` dict for ``exc``."""
    if isinstance(exc, EngineError):
        hint = exc.hint
    elif isinstance(exc, ModelFileError):
        hint = "check --model: it must be a .rspmodel file made by `python -m engine import` or `training export`"
    elif isinstance(exc, MemoryError):
        hint = "lower --batch-size or --tile"
    else:
        hint = "this is a bug or an unexpected environment problem; run again with --debug and report the traceback"
    return event(ERROR, kind=type(exc).__name__, message=str(exc) or type(exc).__name__, hint=hint)
