"""What one "Where to label next" run needs, and its command line (``python -m training suggest``).

Pure Python (standard library only, no Qt) so the arguments are tested without a GUI. The Segment layer and Train
model dialogs and the Processing algorithm fill :class:`SuggestParameters`; :meth:`SuggestParameters.suggest_args`
is the argument list after ``<python> -m training`` (the interface is fixed by the training package:
``suggest --model M --raster R [--labels L [--class-field F]] [--count K] [--size PX] [--output S.gpkg]
[--overwrite] [--device D]``, ``training/suggest_cli.py``). The command writes a GeoPackage of ``count`` squares
of ``size`` raster pixels with the fields ``rank`` (1 = label here first), ``uncertainty`` (0..1), ``predicted`` (the
class predicted most there), ``predicted_share``, ``classes``, ``mean_confidence`` and more, in the labels' CRS when
labels are given, else the raster's.

Decisions:

- The dialogs never replace a file: the suggestions go next to the run's outputs under the first free name
  ``<stem>_suggestions.gpkg``, ``<stem>_suggestions_2.gpkg``, ... (:func:`free_suggestions_path`), so each round of
  the labelling loop keeps its own layer. Processing owns its destinations and passes ``--overwrite``.
- ``size`` None lets the command choose (the model's tile); ``count`` is always passed (default: the command's own,
  :data:`DEFAULT_COUNT`); ``device`` follows the run the suggestions come after (None: the command's choice).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .parameters import DEVICES, CheckedParameters

SUGGEST_COMMAND = "suggest"
SUGGESTIONS_SUFFIX = "_suggestions"
GPKG = ".gpkg"
# training.suggest's DEFAULT_COUNT and MIN_SIZE (a test keeps them equal); the plugin does not import training.
DEFAULT_COUNT = 10
MAX_COUNT = 1000
MIN_SIZE, MAX_SIZE, SIZE_STEP = 8, 4096, 32  # pixels; None = the model's tile
RANK_FIELD = "rank"
UNCERTAINTY_FIELD = "uncertainty"
PREDICTED_FIELD = "predicted"
# The layer's fields as the command writes them (the styling and the Processing output rely on the first three).
SUGGESTION_FIELDS = (RANK_FIELD, UNCERTAINTY_FIELD, PREDICTED_FIELD, "predicted_share", "classes", "mean_confidence")


def _safe_stem(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_.") or "raster"


def free_suggestions_path(folder: str, stem: str) -> str:
    """The first ``<folder>/<stem>_suggestions[_N].gpkg`` that does not exist yet (N = 2, 3, ...).

    Args:
        folder: where the file goes (e.g. the class raster's folder, or a training run's work folder).
        stem: what the suggestions are about, e.g. ``"ortho_demo_lite_potsdam"``; characters other than letters,
            digits, ``_``, ``-`` and ``.`` become ``_``.
    """
    base = os.path.join(folder, _safe_stem(stem) + SUGGESTIONS_SUFFIX)
    path, n = base + GPKG, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}_{n}{GPKG}"
    return path


def suggestions_stem(raster_path: str, model_path: str) -> str:
    """``<raster stem>_<model stem>``: the stem of a segmentation's suggestions (as its outputs are named)."""
    return f"{_safe_stem(Path(raster_path).stem)}_{_safe_stem(Path(model_path).stem)}"


@dataclass(frozen=True)
class SuggestParameters(CheckedParameters):
    """One run of ``python -m training suggest``.

    Attributes:
        model_path: the ``.rspmodel`` that segments the raster (the run's model).
        raster_path: GDAL-readable raster (a file or a ``/vsi...`` name).
        output: the GeoPackage to write.
        labels_path: polygons already labelled (any OGR format and CRS): suggestions avoid them and come in their
            CRS; "" for none.
        class_field: the labels' class field ("" for none; only with ``labels_path``).
        count: how many squares.
        size: a square's side in raster pixels; None for the model's tile.
        overwrite: replace an existing ``output``.
        device: ``cpu`` or ``cuda`` to segment on; None lets the command choose (CUDA when available).
    """

    model_path: str
    raster_path: str
    output: str
    labels_path: str = ""
    class_field: str = ""
    count: int = DEFAULT_COUNT
    size: int | None = None
    overwrite: bool = False
    device: str | None = None

    def problems(self) -> list[str]:
        """Every reason this run cannot start, in words an analyst can act on (empty when valid)."""
        out: list[str] = []
        if not self.model_path or not os.path.isfile(self.model_path):
            out.append("Choose a model file (.rspmodel).")
        if not self.raster_path or not (os.path.isfile(self.raster_path) or self.raster_path.startswith("/vsi")):
            out.append("The raster must be a file GDAL reads (a web layer cannot be read again for suggestions).")
        if self.labels_path and not os.path.isfile(self.labels_path):
            out.append(f"The labels file is missing: {self.labels_path}.")
        if self.class_field and not self.labels_path:
            out.append("A class field needs a labels layer.")
        if not 1 <= self.count <= MAX_COUNT:
            out.append(f"The number of squares must be 1..{MAX_COUNT}.")
        if self.size is not None and not MIN_SIZE <= self.size <= MAX_SIZE:
            out.append(f"The square size must be {MIN_SIZE}..{MAX_SIZE} pixels.")
        if self.device is not None and self.device not in DEVICES:
            out.append(f"Device must be one of {', '.join(DEVICES)}.")
        if not self.output.lower().endswith(GPKG):
            out.append("The suggestions are written as a GeoPackage (.gpkg).")
        else:
            folder = os.path.dirname(os.path.abspath(self.output))
            if not os.path.isdir(folder):
                out.append(f"The output folder does not exist: {folder}")
            elif not os.access(folder, os.W_OK):
                out.append(f"The output folder is not writable: {folder}.")
            elif os.path.exists(self.output) and not self.overwrite:
                out.append(f"{self.output} exists: choose another name.")
        return out

    def suggest_args(self) -> list[str]:
        """Arguments after ``<python> -m training``: an argument list for QProcess, never a shell string."""
        args = [SUGGEST_COMMAND, "--model", self.model_path, "--raster", self.raster_path]
        if self.labels_path:
            args += ["--labels", self.labels_path]
            if self.class_field:
                args += ["--class-field", self.class_field]
        args += ["--count", str(self.count)]
        if self.size is not None:
            args += ["--size", str(self.size)]
        args += ["--output", self.output]
        if self.device is not None:
            args += ["--device", self.device]
        if self.overwrite:
            args.append("--overwrite")
        return args

    def output_paths(self) -> list[str]:
        """What the run writes under a requested name (removed by the runner when it fails or is cancelled)."""
        return [self.output]
