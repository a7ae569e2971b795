"""One fine-tuning run, from rasters and labels to a model file with honest hold-out metrics.

::

    from training.finetune.run import FinetuneRequest, finetune
    result = finetune(FinetuneRequest(rasters=("ortho.tif",), labels=("labels.gpkg",), class_field="class",
                                      output="mine.rspmodel", init="demo.rspmodel"), on_event=print)

Steps, each reported as a ``status`` event: classes from the labels (:mod:`~training.finetune.classes`); label rasters,
spatial split and chips (:mod:`~training.finetune.prepare`); the start network (:mod:`~training.finetune.start`);
training with the training package's :class:`training.trainer.Trainer` (schedule, augmentation, checkpoints every
:data:`CHECKPOINT_EVERY` iterations and on cancel, TensorBoard, bit-identical ``--resume``), one ``progress`` event per
iteration; the hold-out evaluation (:mod:`~training.finetune.holdout`); then, by default, the **refit**: the same
training again from the same start, seed and recipe on *all* labels, the held-out blocks included (checkpoints in
``<work folder>/refit``); the model file, written under a temporary name and renamed at the very end, plus
``report.json`` and ``confusion_matrix.png`` in the work folder.

Why the refit: the hold-out takes a fifth of the labelled blocks, one block of every class first, so with few labels
it takes a large share of the rare classes. Measured with ``python -m bench.finetune_quality`` (40 squares of 32² px,
test on the never-labelled bottom 40 %), training on all labels instead of the training blocks alone raised mIoU
from 20.1 to 35.3 (DeepGlobe), 25.3 to 32.3 (LoveDA tile 2) and 23.2 to 31.6 (Dubai). The hold-out figures are
those of the first training, the recipe's honest estimate on this data; the written model learnt from more labels
(the model file's description says so). It costs a second training; ``--no-refit`` writes the measured model.

The work folder (default: ``<output stem>_finetune`` next to the output) keeps the label rasters and checkpoints, so
``--resume`` continues an interrupted run; it records the run's inputs in ``finetune.json`` and refuses to resume a
different run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from engine.errors import CancelledError, ParameterError
from engine.events import DONE, START, STATUS, WARNING
from engine.model_file import ModelInfo
from training.finetune.classes import ClassTable, build_table, read_classes_json
from training.finetune.labels import LabelSource
from training.finetune.outcome import small_class_warnings
from training.finetune.request import (
    CHECKPOINT_EVERY,
    CONFUSION_FILE,
    DEFAULT_RECIPE,
    HOLDOUT_MODEL,
    RECIPES,
    REFIT_DIR,
    REPORT_FILE,
    STATE_FILE,
    EventCallback,
    FinetuneRequest,
    FinetuneResult,
    Recipe,
    created_today,
    emit,
)
from training.finetune.split import block_size


def _class_table(
    request: FinetuneRequest, sources: list[LabelSource], start: ModelInfo | None
) -> tuple[ClassTable, list[str]]:
    """The classes (see :mod:`training.finetune.classes`); the start model's order when the names are its own."""
    found: dict[str, int] = {}
    for s in sources:
        for k, v in s.values().items():
            found[k] = found.get(k, 0) + v
    entries = read_classes_json(request.classes) if request.classes else None
    if entries is None and start is not None and set(found) == set(start.class_names):
        # the start model's classes: keep its order and colours, and so its decode head
        entries = [{"name": n, "color": list(c)} for n, c in zip(start.class_names, start.colors, strict=True)]
    table = build_table(found, entries)
    notes = []
    unused = sorted(set(found) - set(table.codes))
    if unused:
        notes.append(f"label values not in --classes are not trained on: {', '.join(unused[:20])}")
    return table, notes


def _fingerprint(request: FinetuneRequest, table: ClassTable) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one."""

    def ident(path: str) -> list[Any]:
        base = path.split("|", 1)[0]
        st = os.stat(base)
        return [os.path.abspath(base), st.st_size, int(st.st_mtime)]

    keep = (
        "class_field", "init", "backbone", "arch", "iters", "batch_size", "tile", "gsd", "freeze_backbone", "refit"
    )  # fmt: skip
    return {
        "rasters": [ident(p) for p in request.rasters],
        "labels": [ident(p) for p in request.labels],
        "classes": list(table.names),
        "val_fraction": request.val_fraction,
        "seed": request.seed,
        "bands": list(request.bands) if request.bands else None,
        **{k: getattr(request, k) for k in keep},
    }


def _check_resume(work_dir: str, fingerprint: dict[str, Any], resume: bool, on_event: EventCallback | None) -> None:
    path = os.path.join(work_dir, STATE_FILE)
    if resume and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
        if changed:
            raise ParameterError(
                f"--resume: {work_dir} holds a run with other {', '.join(changed)}",
                "run without --resume to start again, or pass the interrupted run's options",
            )
    elif not resume and os.path.isfile(os.path.join(work_dir, "latest.pth")):
        emit(
            on_event,
            STATUS,
            message=f"starting afresh in {work_dir} (its checkpoints are replaced; --resume continues)",
        )
    if not resume:
        shutil.rmtree(os.path.join(work_dir, REFIT_DIR), ignore_errors=True)  # an earlier run's second training
    os.makedirs(work_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f, indent=1)


def finetune(
    request: FinetuneRequest, on_event: EventCallback | None = None, cancel: threading.Event | None = None
) -> FinetuneResult:
    """Run ``request`` (see the module docstring).

    Raises:
        engine.errors.ParameterError (and other ``EngineError``): bad input, with a hint; nothing is written under
            ``request.output``. engine.errors.CancelledError: ``cancel`` was set; the work folder keeps a checkpoint.
    """
    from engine.outputs import check_output_path
    from training.finetune.prepare import pair_inputs, prepare_data
    from training.finetune.start import check_start_args, default_start_model, start_info

    t0 = time.monotonic()
    cancel = cancel or threading.Event()

    def check_cancel() -> None:
        if cancel.is_set():
            raise CancelledError("cancelled")

    check_output_path(request.output, request.overwrite)
    check_start_args(request.init, request.backbone, request.arch)
    if not (request.init or request.backbone or request.arch):
        request = replace(request, init=default_start_model())
        emit(on_event, STATUS, message=f"starting from the bundled {os.path.basename(str(request.init))} "
                                       "(no --init, --backbone or --arch given)")  # fmt: skip
    pairs = pair_inputs(list(request.rasters), list(request.labels))
    info = start_info(request.init)
    arch = info.arch if info else request.arch
    recipe = RECIPES.get(arch or "", DEFAULT_RECIPE)
    tile = request.tile or (info.tile_size if info and info.tile_size % 32 == 0 else recipe.tile)
    iters = request.iters or recipe.iters
    batch = request.batch_size or recipe.batch_size

    emit(on_event, STATUS, message="reading the labels")
    label_files = {p: LabelSource(p, request.class_field) for p in dict.fromkeys(request.labels)}
    table, notes = _class_table(request, list(label_files.values()), info)
    work_dir = request.work_folder
    _check_resume(work_dir, _fingerprint(request, table), request.resume, on_event)
    emit(on_event, STATUS, message=f"{table.num_classes} classes: {', '.join(table.names)}; rasterising the labels")
    band_names = info.bands if info else ("red", "green", "blue")
    value_range = info.value_range if info else (0.0, 255.0)
    data = prepare_data(
        pairs, request.class_field, table, [label_files[lab] for _, lab in pairs], band_names, value_range,
        request.bands, request.gsd, tile, block_size(tile), request.val_fraction, request.seed, work_dir, check_cancel,
    )  # fmt: skip
    for note in notes + data.warnings:
        emit(on_event, STATUS, message=note)
    train_pixels = sum(s.counts[~s.holdout].sum(axis=0) for s in data.splits)
    for note in small_class_warnings(train_pixels, table.names, data.chip):
        emit(on_event, WARNING, message=note)
    held = sum(len(s.holdout_blocks) for s in data.splits)
    emit(
        on_event,
        START,
        rasters=list(request.rasters),
        classes=list(table.names),
        gsd_m=data.gsd_m,
        tile=tile,
        chip=data.chip,
        iterations=iters,
        batch_size=batch,
        chips=len(data.chips),
        blocks=sum(len(s.blocks) for s in data.splits),
        holdout_blocks=held,
        work_dir=work_dir,
    )
    from training.finetune.training import measure_holdout, train, write_outputs

    refit = request.refit and recipe.random_crops and held > 0
    total = 2 * iters if refit else iters
    start, trainer = train(
        request, data, table, arch, recipe, tile, iters, batch, work_dir, on_event, cancel, (0, total)
    )  # fmt: skip
    metrics = measure_holdout(data, table, start, trainer, work_dir, on_event, cancel)
    again = None
    if refit:
        # the hold-out has been measured; the written model learns from every label (see the module docstring)
        everything = replace(data, splits=[replace(s, holdout=np.zeros_like(s.holdout)) for s in data.splits])
        _, again = train(
            request, everything, table, arch, recipe, tile, iters, batch, os.path.join(work_dir, REFIT_DIR),
            on_event, cancel, (iters, total), "hold-out measured; training again on all labels:",
        )  # fmt: skip
    report = write_outputs(request, data, table, start, trainer, metrics, tile, work_dir, again)
    result = FinetuneResult(os.path.abspath(request.output), metrics, report, round(time.monotonic() - t0, 1))
    for note in metrics["warnings"]:  # the model is written; say when it is not to be trusted yet
        emit(on_event, WARNING, message=note)
    emit(
        on_event,
        DONE,
        outputs={"model": result.model, "report": report},
        model=result.model,
        metrics={k: metrics[k] for k in ("OA", "kappa", "mIoU", "mF1")},
        per_class=metrics["per_class"],
        seconds=result.seconds,
        majority=metrics["majority"],
        warnings=metrics["warnings"],
        refit=again is not None,  # the written model learnt from the held-out blocks too (measured before that)
    )
    return result


__all__ = [
    "CHECKPOINT_EVERY",
    "CONFUSION_FILE",
    "DEFAULT_RECIPE",
    "HOLDOUT_MODEL",
    "RECIPES",
    "REFIT_DIR",
    "REPORT_FILE",
    "STATE_FILE",
    "EventCallback",
    "FinetuneRequest",
    "FinetuneResult",
    "Recipe",
    "created_today",
    "emit",
    "finetune",
]
