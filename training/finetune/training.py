"""The training and writing half of a fine-tuning run: the trainer on chips, hold-out metrics, the model file.

Training is :class:`training.trainer.Trainer` (AdamW, poly schedule with warm-up, auxiliary loss 0.4, AMP on CUDA,
checkpoints, TensorBoard, bit-identical resume) with the chips as its dataset. Cancel is honoured between
micro-batches (within one forward/backward of ``samples_per_gpu`` chips) and always leaves a checkpoint of the last
finished iteration (see :meth:`FinetuneTrainer._stop`), so ``--resume`` loses at most the step that was running.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import typing
from typing import Any

import numpy as np
import torch

from engine.errors import CancelledError
from engine.events import PROGRESS, STATUS
from training.checkpoint import rng_state, set_rng_state
from training.finetune.chips import ChipDataset, CropPlan, RandomCropDataset
from training.finetune.classes import IGNORE, ClassTable
from training.finetune.prepare import Prepared
from training.finetune.request import (
    CONFUSION_FILE,
    HOLDOUT_MODEL,
    REPORT_FILE,
    FinetuneRequest,
    Recipe,
    created_today,
    emit,
)
from training.finetune.start import Start, build_start
from training.trainer import Trainer

if typing.TYPE_CHECKING:  # pragma: no cover
    from engine.model_file import ModelInfo
    from training.config import TrainConfig

CPU_SAMPLES_PER_STEP = 4  # chips per forward on a CPU (larger batches accumulate gradients)
LOG_EVERY = 10
ADAMW_NO_DECAY = ("absolute_pos_embed", "relative_position_bias_table", "norm")


class FinetuneTrainer(Trainer):
    """:class:`Trainer` on a :class:`ChipDataset`, emitting ``progress`` events and honouring ``cancel``."""

    def __init__(
        self,
        config: TrainConfig,
        work_dir: str,
        device: str,
        model: torch.nn.Module,
        dataset: torch.utils.data.Dataset,
        table: ClassTable,
        on_event: Any,
        cancel: threading.Event,
        labelled_mean: bool = False,
        backbone_lr_mult: float = 1.0,
    ) -> None:
        self._dataset, self.table, self.on_event, self.cancel = dataset, table, on_event, cancel
        self._t0, self._start_iter = time.monotonic(), 0
        # progress of the whole run when this trainer is its second phase (the refit): iterations done before it
        # and the run's total, so ``progress`` events count 0..total across both phases
        self.progress_offset, self.progress_total = 0, config.max_iters
        self._snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self.labelled_mean, self.backbone_lr_mult = labelled_mean, backbone_lr_mult
        super().__init__(config, work_dir, device=device, model=model, stream=sys.stderr)
        if backbone_lr_mult != 1.0:
            self.optimizer = self._backbone_lr_optimizer(backbone_lr_mult)

    def _backbone_lr_optimizer(self, mult: float) -> torch.optim.Optimizer:
        """AdamW with the backbone's parameter groups at ``mult`` × the schedule's learning rate."""
        from training.schedule import lr_at, param_groups

        cfg = self.config
        backbone = {id(p) for p in typing.cast(torch.nn.Module, self.segmentor.backbone).parameters()}
        groups = []
        for group in param_groups(self.net, cfg.weight_decay, cfg.no_decay_keys):
            for inside in (True, False):
                params = [p for p in group["params"] if (id(p) in backbone) == inside]
                if params:
                    groups.append({**group, "params": params, "lr_mult": mult if inside else 1.0})
        return torch.optim.AdamW(groups, lr=lr_at(0, cfg), betas=cfg.betas, weight_decay=cfg.weight_decay)

    def loss(
        self, decode: torch.Tensor, aux: torch.Tensor | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The seed's loss, averaged over labelled pixels when the recipe says so."""
        from training.losses import seed_loss

        cfg = self.config
        return seed_loss(decode, aux, labels, cfg.ignore_index, cfg.aux_weight, self.labelled_mean)

    def train_dataset(self) -> torch.utils.data.Dataset:
        """The chips."""
        return self._dataset

    def class_meta(self) -> tuple[typing.Sequence[str], typing.Sequence[typing.Sequence[int]]]:
        """The analyst's classes."""
        return self.table.names, self.table.colors

    def _loader(self) -> typing.Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = super()._loader()
        self._t0, self._start_iter = time.monotonic(), self.iteration

        def checked() -> typing.Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for batch in batches:
                if self.cancel.is_set():
                    self._stop()
                yield batch

        return checked()

    def _stop(self) -> typing.NoReturn:
        """Checkpoint the last finished iteration (undoing a half-run step), then raise :class:`CancelledError`.

        A step cancelled between micro-batches has changed nothing but BatchNorm statistics and the RNG (the
        optimiser has not stepped); both are put back as they were when the step began, so the checkpoint is the
        one an uninterrupted run would have written at this iteration and ``--resume`` stays bit-identical.
        """
        if self._snapshot is not None:
            buffers, rng = self._snapshot
            with torch.no_grad():
                for name, value in self.segmentor.named_buffers():
                    value.copy_(buffers[name])
            set_rng_state(rng)
        if self.iteration > 0:
            self.save()
        raise CancelledError("cancelled")

    def train_step(self, batches: typing.Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One step, emitting a ``progress`` event; on cancel, a checkpoint then :class:`CancelledError`."""
        if self.cancel.is_set():
            self._stop()
        self._snapshot = ({k: v.detach().clone() for k, v in self.segmentor.named_buffers()}, rng_state())
        parts = super().train_step(batches)
        self._snapshot = None  # the step is complete: nothing to undo
        it, total = self.iteration, self.progress_total
        rate = (it - self._start_iter) / max(time.monotonic() - self._t0, 1e-9)
        done = self.progress_offset + it
        self.on_event(
            {
                "event": PROGRESS,
                "done": done,
                "total": total,
                "iteration": it,
                "loss": round(parts["loss"], 5),
                "lr": parts["lr"],
                "eta_s": round((total - done) / rate, 1) if rate > 0 else None,
            }
        )
        return parts


def make_config(
    start: Start, table: ClassTable, data: Prepared, recipe: Recipe, tile: int, iters: int, batch: int, cuda: bool,
    seed: int, work_dir: str, eight_bit: bool, labels: str = "",
) -> TrainConfig:  # fmt: skip
    """The training recipe of a fine-tuning run as a :class:`TrainConfig` (so checkpoints carry it)."""
    from training.config import TrainConfig

    # chips per forward: the whole batch on a GPU; on a CPU the largest divisor of the batch up to
    # CPU_SAMPLES_PER_STEP and at least 2 (BatchNorm needs two), else the whole batch
    fits = [n for n in range(2, min(batch, CPU_SAMPLES_PER_STEP) + 1) if batch % n == 0]
    per_step = batch if cuda or not fits else max(fits)
    return TrainConfig(
        name="finetune",
        arch=start.arch,
        dataset="custom",
        data_root=work_dir,
        num_classes=table.num_classes,
        ignore_index=IGNORE,
        crop_size=data.chip,
        resize_scale=data.chip,
        ratio_range=recipe.ratio_range,
        cat_max_ratio=0.75,
        seg_pad_val=IGNORE,
        samples_per_gpu=per_step,
        batch_size=batch,
        max_iters=iters,
        optimizer="adamw",
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        no_decay_keys=ADAMW_NO_DECAY,
        lr_power=1.0,
        min_lr=0.0,
        warmup_iters=min(recipe.warmup_iters, iters // 10),
        checkpoint_interval=min(50, iters),
        val_interval=0,
        log_interval=min(LOG_EVERY, iters),
        test_tile=tile,
        test_stride=tile * 3 // 4,
        num_workers=0,
        seed=seed,
        photometric=eight_bit and recipe.photometric,
        mean=tuple(start.mean),  # type: ignore[arg-type]  # three bands (checked by the band mapping)
        std=tuple(start.std),  # type: ignore[arg-type]
        bands=start.bands,
        gsd_m=data.gsd_m,
        dataset_title=f"own labels ({labels})",
    )


def train(
    request: FinetuneRequest, data: Prepared, table: ClassTable, arch: str | None, recipe: Recipe, tile: int,
    iters: int, batch: int, work_dir: str, on_event: Any, cancel: threading.Event,
    progress: tuple[int, int] | None = None, what: str = "training",
) -> tuple[Start, FinetuneTrainer]:  # fmt: skip
    """Build the start network and train it on the chips; returns it with the trainer (weights in ``segmentor``).

    ``progress``: ``(iterations before this phase, the run's total)`` for the ``progress`` events (default: this
    phase alone); ``what`` begins the status line that announces the training.
    """
    from training.datasets import train_pipeline

    emit(on_event, STATUS, message="building the start network")
    torch.manual_seed(request.seed)  # fresh heads start the same in every run with this seed
    start = build_start(table.num_classes, table.names, request.init, request.backbone, arch)
    for w in start.warnings:
        emit(on_event, STATUS, message=w)
    if request.freeze_backbone:
        for p in start.model.backbone.parameters():
            p.requires_grad = False
    device = request.device or "auto"
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    eight_bit = tuple(start.value_range) == (0.0, 255.0)
    labels = ", ".join(os.path.basename(p.split("|")[0]) for p in dict.fromkeys(request.labels))
    config = make_config(
        start, table, data, recipe, tile, iters, batch, cuda, request.seed, work_dir, eight_bit, labels
    )
    dataset: torch.utils.data.Dataset = ChipDataset(data.sources, data.chips, train_pipeline(config), eight_bit)
    if recipe.random_crops:
        plan = CropPlan(data.chip, recipe.ratio_range, recipe.class_power, config.photometric)
        dataset = RandomCropDataset(data.sources, data.splits, plan, config.mean, config.std, eight_bit)
    from training.trainer import TrainingError

    try:
        trainer = FinetuneTrainer(
            config, work_dir, device, start.model, dataset, table, on_event or print, cancel, recipe.labelled_mean,
            recipe.backbone_lr_mult,
        )  # fmt: skip
    except TrainingError as exc:
        from engine.errors import ParameterError

        raise ParameterError(str(exc), "use --device cpu, or --device cuda on a machine with a GPU") from exc
    if request.freeze_backbone:
        trainer.frozen.append(start.model.backbone)
    if progress is not None:
        trainer.progress_offset, trainer.progress_total = progress
    emit(on_event, STATUS, message=f"{what} {start.arch} on {trainer.device} for {iters} iterations")
    trainer.run(resume=request.resume)
    return start, trainer


def _model_info(start: Start, table: ClassTable, trainer: FinetuneTrainer) -> ModelInfo:
    from engine.model_file import ModelInfo

    return ModelInfo(
        arch=start.arch,
        num_classes=table.num_classes,
        class_names=table.names,
        colors=table.colors,
        **trainer.config.model_info_fields(start.value_range),  # the start's inputs, the run's GSD and window
    )


def measure_holdout(
    data: Prepared, table: ClassTable, start: Start, trainer: FinetuneTrainer, work_dir: str, on_event: Any,
    cancel: threading.Event,
) -> dict[str, Any]:  # fmt: skip
    """The trained network's hold-out summary through the engine, with ``majority`` and ``warnings`` added."""
    from engine.inference import prepare_network
    from engine.model_file import load_model_file, save_model_file
    from training.finetune.holdout import evaluate_holdout
    from training.finetune.outcome import majority_baseline, outcome_warnings

    held_model = os.path.join(work_dir, HOLDOUT_MODEL)
    save_model_file(held_model, trainer.state_dict(), _model_info(start, table, trainer))
    emit(on_event, STATUS, message="measuring the held-out blocks with the engine")
    model, _ = load_model_file(held_model, device=str(trainer.device))
    prepare_network(model)  # what `engine predict` runs by default
    summary = evaluate_holdout(
        held_model, (model, trainer.device), data, table, work_dir, trainer.config.samples_per_gpu, cancel,
        on_block=lambda d, t: emit(on_event, STATUS, message=f"held-out block {d}/{t}"),
    )  # fmt: skip
    os.remove(held_model)
    per_class = sum(s.counts[~s.holdout].sum(axis=0) for s in data.splits)  # (K,) training pixels per class
    counts = np.asarray(summary["confusion_matrix"], np.int64)
    summary["majority"] = majority_baseline(counts, per_class, table.names)
    mean_iou = summary["mIoU"] if summary["mIoU"] == summary["mIoU"] else 0.0  # NaN: nothing measured
    summary["warnings"] = outcome_warnings(counts, per_class, table.names, mean_iou, trainer.iteration)
    return summary


def write_outputs(
    request: FinetuneRequest, data: Prepared, table: ClassTable, start: Start, trainer: FinetuneTrainer,
    summary: dict[str, Any], tile: int, work_dir: str, refit: FinetuneTrainer | None = None,
) -> str:  # fmt: skip
    """``report.json``, the confusion PNG and the model file (``refit``'s weights when given, else ``trainer``'s);
    returns the report's path. ``summary`` is :func:`measure_holdout` of ``trainer``."""
    from engine.model_file import save_model_file
    from training.evaluate import save_confusion_png
    from training.metrics import write_json

    labels_names = ", ".join(os.path.basename(p.split("|")[0]) for p in dict.fromkeys(request.labels))
    info = _model_info(start, table, trainer)
    train_pixels = int(sum(s.counts[~s.holdout].sum() for s in data.splits))
    all_pixels = int(sum(s.counts.sum() for s in data.splits))
    written = refit or trainer
    report = {
        **summary,
        "model": os.path.abspath(request.output),
        "arch": start.arch,
        "start": start.provenance,
        "iterations": trainer.iteration,
        "tile": tile,
        "gsd_m": data.gsd_m,
        "val_fraction": request.val_fraction,
        "training_pixels": train_pixels,
        "training_chips": len(data.chips),
        # the written model: trained again on every labelled pixel once the hold-out was measured (--no-refit: no)
        "refit": refit is not None,
        "model_training_pixels": all_pixels if refit is not None else train_pixels,
        "freeze_backbone": request.freeze_backbone,
        "rasters": [os.path.abspath(r) for r in request.rasters],
        "labels": [os.path.abspath(p.split("|")[0]) for p in request.labels],
        "warnings": data.warnings + summary["warnings"],
        "holdout_windows": [  # on each raster's work grid (its own pixels unless resampled to another GSD)
            {"raster": i, "xoff": b.col, "yoff": b.row, "xsize": b.width, "ysize": b.height}
            for i, s in enumerate(data.splits)
            for b in s.holdout_blocks
        ],
    }
    report_path = os.path.join(work_dir, REPORT_FILE)
    write_json(report, report_path)
    save_confusion_png(summary, os.path.join(work_dir, CONFUSION_FILE))
    headline = {k: float(summary[k]) for k in ("OA", "kappa", "mIoU", "mF1") if summary[k] == summary[k]}
    start_text = start.provenance.get("start", start.kind)
    holdout = {
        k: summary[k] for k in ("per_class", "confusion_matrix", "class_names", "holdout_blocks", "holdout_pixels")
    }
    final = dataclasses.replace(
        info,
        metrics=headline,
        description=(
            f"UperNet {start.arch} fine-tuned from {start_text} on {train_pixels} labelled pixels of {labels_names} "
            f"({trainer.iteration} iterations). Hold-out accuracy on {summary['holdout_pixels']} pixels of spatially "
            f"separate blocks: OA {summary['OA']}, kappa {summary['kappa']}, mIoU {summary['mIoU']}, "
            f"mF1 {summary['mF1']}."
            + (
                f" This model was then trained again the same way on all {all_pixels} labelled pixels, the "
                "held-out blocks included: the figures above estimate it (it learnt from more labels)."
                if refit is not None
                else ""
            )
        ),
        provenance={
            **start.provenance,
            "source": labels_names,
            "tool": "python -m training finetune",
            "created": created_today(),
            "iterations": trainer.iteration,
            "training_pixels": train_pixels,
            "refit": refit is not None,
            "model_training_pixels": all_pixels if refit is not None else train_pixels,
            "val_fraction": request.val_fraction,
            "holdout": holdout,
        },
    )
    save_model_file(request.output, written.state_dict(), final)  # temporary name, then rename
    return report_path
