"""What one fine-tuning run needs, gathered from the Train model dialog or Processing, and its command line.

Pure Python (standard library only, no Qt) so the arguments are tested without a GUI. The UI fills
:class:`TrainParameters`; :meth:`TrainParameters.finetune_args` is the argument list after
``<python> -m training`` (the command-line interface is fixed by the training package, see
``training/finetune/cli.py``); :func:`accuracy_args` does the same for ``training accuracy``.

Decisions:

- The model file goes into the profile's models folder (``model_catalog.user_models_dir()``), named by the analyst,
  so the Segment dialog and the model manager list it; its work folder (checkpoints, label rasters, ``report.json``,
  ``classes.json``, exported labels) is ``<name>_finetune`` next to it: the training package's own default
  (:func:`work_folder_for`).
- A run is *unfinished* (Resume is offered) when its work folder holds a checkpoint but the model file does not
  exist: a cancelled or crashed run.
- Labels that are not a plain file (memory layers, selected features, database layers) are exported into the work
  folder rather than a throw-away folder, because a resumed run must read the same file as the interrupted one
  (the training package compares the labels' path, size and time); on Resume that export is reused
  (:func:`resumable_labels`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .parameters import DEVICES, CheckedParameters, InvalidParametersError

TRAINING_MODULE = "training"
MODEL_SUFFIX = ".rspmodel"
WORK_DIR_SUFFIX = "_finetune"
CLASSES_FILE_NAME = "classes.json"
CHECKPOINT_FILE_NAME = "latest.pth"  # training.checkpoint.LATEST
RUN_STATE_FILE_NAME = "finetune.json"  # training.finetune.run.STATE_FILE
REPORT_FILE_NAME = "report.json"  # training.finetune.run.REPORT_FILE

# Iterations the training package runs when --iters is not given (training.finetune.run.RECIPES; a test keeps them
# equal): the demo network is sized for a CPU, the RSP networks for a GPU.
DEFAULT_ITERATIONS: dict[str, int] = {
    "lite_resnet": 300,
    "rsp_resnet50": 2000,
    "rsp_swin_t": 2000,
    "rsp_vitaev2_s": 2000,
}
FALLBACK_ITERATIONS = 1000  # training.finetune.run.DEFAULT_RECIPE, for an architecture without a recipe
RSP_BACKBONE_ARCHS = ("rsp_resnet50", "rsp_swin_t", "rsp_vitaev2_s")
MAX_ITERATIONS = 1_000_000
MAX_BATCH_SIZE = 256
MIN_TILE, MAX_TILE, TILE_MULTIPLE = 64, 2048, 32
DEFAULT_VAL_FRACTION = 0.2
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class StartKind(StrEnum):
    """Where fine-tuning starts: a model file (``--init``) or an RSP pretraining checkpoint (``--backbone``)."""

    MODEL = "model"
    BACKBONE = "backbone"


def default_iterations(arch: str | None) -> int:
    """The training package's default number of iterations for ``arch`` (None: an RSP backbone, not yet known)."""
    if arch is None:
        return DEFAULT_ITERATIONS[RSP_BACKBONE_ARCHS[0]]
    return DEFAULT_ITERATIONS.get(arch, FALLBACK_ITERATIONS)


def work_folder_for(output_model: str) -> str:
    """``<output stem>_finetune`` next to the model file (what ``training finetune`` uses without ``--work-dir``)."""
    return os.path.splitext(os.path.abspath(output_model))[0] + WORK_DIR_SUFFIX


def has_unfinished_run(output_model: str, work_dir: str | None = None) -> bool:
    """Whether ``--resume`` can continue a run: its work folder holds a checkpoint and the model file is missing."""
    folder = work_dir or work_folder_for(output_model)
    return os.path.isfile(os.path.join(folder, CHECKPOINT_FILE_NAME)) and not os.path.exists(output_model)


def resumable_labels(work_dir: str) -> str | None:
    """The labels file the interrupted run in ``work_dir`` read, when it lies in that folder (an export), else None.

    Read from the run's ``finetune.json`` (``"labels": [[path, size, mtime], ...]``).
    """
    try:
        with open(os.path.join(work_dir, RUN_STATE_FILE_NAME), encoding="utf-8") as f:
            labels = json.load(f).get("labels") or []
        path = str(labels[0][0])
    except (OSError, ValueError, AttributeError, IndexError, TypeError, KeyError):
        return None
    inside = os.path.dirname(os.path.abspath(path)) == os.path.abspath(work_dir)
    return path if inside and os.path.isfile(path) else None


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model file (None when it can): letters, digits, ``_``, ``-`` and ``.`` only."""
    if not name:
        return "Give the new model a name."
    if not _MODEL_NAME.fullmatch(name):
        return f"The model name {name!r} may hold letters, digits, '_', '-' and '.' only (it becomes a file name)."
    return None


def safe_model_name(text: str) -> str:
    """``text`` made into a valid model name (other characters become ``_``); ``"model"`` when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.strip()).strip("_.-")
    return name or "model"


def model_path_for(name: str, folder: str) -> str:
    """The model file of ``name`` in the models folder ``folder``."""
    return os.path.join(folder, name + MODEL_SUFFIX)


def class_entry(name: str, color: tuple[int, int, int], value: Any) -> dict[str, Any]:
    """One ``classes.json`` entry (the training package's format): the class ``name`` (its order is the file's), its
    ``color`` as ``[r, g, b]``, and the label ``value`` (a field value) that means it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, str | int | float):
        value = str(value)
    return {"name": str(name), "color": [int(c) for c in color], "value": value}


def write_classes_json(entries: list[dict[str, Any]], path: str) -> str:
    """Write ``classes.json`` (a list of :func:`class_entry` objects) for ``--classes``; return its path.

    Raises:
        InvalidParametersError: no entry, or two entries share a name (each name is one class of the model).
    """
    if not entries:
        raise InvalidParametersError("No class to write: the labels layer's style has no category.")
    names = [e["name"] for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidParametersError(
            f"Several categories of the labels layer's style are labelled {', '.join(repr(n) for n in twice)}: "
            "each category label becomes a class name, so give them different labels."
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1)
    return path


@dataclass(frozen=True)
class TrainParameters(CheckedParameters):
    """One run of ``python -m training finetune``.

    Attributes:
        raster_path: GDAL-readable raster file of the imagery.
        labels_path: polygon file (any OGR format, any CRS) holding the labels.
        class_field: the labels' field with class names or integer codes.
        output_model: the ``.rspmodel`` file to write.
        start: a model file (``init_model``) or an RSP backbone checkpoint (``backbone`` + optional ``arch``).
        init_model: start model file, for :attr:`StartKind.MODEL`.
        backbone: RSP pretraining checkpoint (``rsp-*-ckpt.pth``), for :attr:`StartKind.BACKBONE`.
        arch: the backbone's architecture; None lets the training package find it from the file.
        iterations: training iterations; None for the architecture's default (:data:`DEFAULT_ITERATIONS`).
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: chips per optimiser step; None for the architecture's default.
        tile: chip and window size in pixels (multiple of 32); None for the default.
        classes_json: ``classes.json`` with class order, names, colours and values; None: the field's values.
        work_dir: checkpoints and reports; None: ``<output stem>_finetune`` (:func:`work_folder_for`).
        resume: continue the interrupted run in the work folder.
        freeze_backbone: train the heads only.
        val_fraction: share of labelled blocks held out for the accuracy figures; None for the default (0.2).
        bands: raster bands feeding the model's inputs (1-based); None for the default.
        overwrite: replace an existing model file of that name.
    """

    raster_path: str
    labels_path: str
    class_field: str
    output_model: str
    start: StartKind = StartKind.MODEL
    init_model: str = ""
    backbone: str = ""
    arch: str | None = None
    iterations: int | None = None
    device: str = "cpu"
    batch_size: int | None = None
    tile: int | None = None
    classes_json: str | None = None
    work_dir: str | None = None
    resume: bool = False
    freeze_backbone: bool = False
    val_fraction: float | None = None
    bands: tuple[int, ...] | None = None
    overwrite: bool = False

    @property
    def work_folder(self) -> str:
        """The run's work folder (``work_dir`` or the training package's default)."""
        return self.work_dir or work_folder_for(self.output_model)

    def problems(self, inputs_pending: bool = False) -> list[str]:
        """Every reason this run cannot start, in words an analyst can act on (empty when valid).

        Args:
            inputs_pending: the labels export and ``classes.json`` are still to be written into the work folder
                (the dialog checks everything else first, so a run that cannot start writes nothing).
        """
        out: list[str] = []
        if not self.raster_path or not os.path.isfile(self.raster_path):
            out.append("Choose a raster layer stored in a file (GeoTIFF or any GDAL format).")
        if not self.labels_path or not (inputs_pending or os.path.isfile(self.labels_path)):
            out.append("Choose a polygon layer with your labels.")
        if not self.class_field:
            out.append("Choose the labels' class field.")
        if self.start is StartKind.MODEL and not (self.init_model and os.path.isfile(self.init_model)):
            out.append("Choose the model to start from (the bundled demo model, or one from the Model manager).")
        if self.start is StartKind.BACKBONE:
            if not (self.backbone and os.path.isfile(self.backbone)):
                out.append("Choose an RSP backbone file (rsp-resnet-50-ckpt.pth, rsp-swin-t-ckpt.pth, ...).")
            if self.arch is not None and self.arch not in RSP_BACKBONE_ARCHS:
                out.append(f"The backbone architecture must be one of {', '.join(RSP_BACKBONE_ARCHS)}.")
        if not self.output_model or not self.output_model.endswith(MODEL_SUFFIX):
            out.append(f"The output must be a model file ({MODEL_SUFFIX}).")
        else:
            folder = os.path.dirname(os.path.abspath(self.output_model))
            if os.path.isdir(folder) and not os.access(folder, os.W_OK):
                out.append(f"The models folder is not writable: {folder}.")
            elif os.path.exists(self.output_model) and not self.overwrite:
                out.append(
                    f"A model named {os.path.basename(self.output_model)} exists: choose another name, or tick "
                    "'Replace an existing model of this name'."
                )
        if self.resume and not os.path.isfile(os.path.join(self.work_folder, CHECKPOINT_FILE_NAME)):
            out.append(f"There is no interrupted run to resume in {self.work_folder}.")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            out.append(f"Iterations must be 1..{MAX_ITERATIONS}.")
        if self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            out.append(f"Batch size must be 1..{MAX_BATCH_SIZE}.")
        if self.tile is not None and not (MIN_TILE <= self.tile <= MAX_TILE and self.tile % TILE_MULTIPLE == 0):
            out.append(f"The tile size must be a multiple of {TILE_MULTIPLE} in {MIN_TILE}..{MAX_TILE} pixels.")
        if self.val_fraction is not None and not 0 < self.val_fraction <= 0.5:
            out.append("The held-out share must be above 0 and at most 0.5.")
        if self.device not in DEVICES:
            out.append(f"Device must be one of {', '.join(DEVICES)}.")
        if self.bands is not None and (not self.bands or any(b < 1 for b in self.bands)):
            out.append("Band numbers start at 1.")
        if self.classes_json is not None and not (inputs_pending or os.path.isfile(self.classes_json)):
            out.append(f"The classes file is missing: {self.classes_json}.")
        return out

    def finetune_args(self) -> list[str]:
        """Arguments after ``<python> -m training``: an argument list for QProcess, never a shell string."""
        args = ["finetune", "--raster", self.raster_path, "--labels", self.labels_path]
        args += ["--class-field", self.class_field, "--output", self.output_model]
        if self.start is StartKind.MODEL:
            args += ["--init", self.init_model]
        else:
            args += ["--backbone", self.backbone]
            if self.arch:
                args += ["--arch", self.arch]
        if self.iterations is not None:
            args += ["--iters", str(self.iterations)]
        args += ["--work-dir", self.work_folder, "--device", self.device]
        if self.batch_size is not None:
            args += ["--batch-size", str(self.batch_size)]
        if self.tile is not None:
            args += ["--tile", str(self.tile)]
        if self.val_fraction is not None:
            args += ["--val-fraction", f"{self.val_fraction:g}"]
        if self.classes_json:
            args += ["--classes", self.classes_json]
        if self.bands:
            args += ["--bands", ",".join(str(b) for b in self.bands)]
        if self.freeze_backbone:
            args.append("--freeze-backbone")
        if self.resume:
            args.append("--resume")
        if self.overwrite:
            args.append("--overwrite")
        return args

    def output_paths(self) -> list[str]:
        """What the run writes under a requested name (removed by the runner when it fails or is cancelled)."""
        return [self.output_model]


def accuracy_args(prediction: str, reference: str, class_field: str | None, output: str | None) -> list[str]:
    """Arguments after ``<python> -m training`` for ``accuracy``.

    Args:
        prediction: a class raster as the engine writes it (class names from its category names).
        reference: reference polygons or a reference class raster.
        class_field: the reference polygons' class field (None for a raster).
        output: where the JSON report goes (None: only the ``done`` event).
    """
    args = ["accuracy", "--prediction", prediction, "--reference", reference]
    if class_field:
        args += ["--class-field", class_field]
    if output:
        args += ["--output", output]
    return args
