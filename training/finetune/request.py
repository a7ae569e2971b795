"""What a fine-tuning run is asked (:class:`FinetuneRequest`), its per-architecture defaults (:class:`Recipe`), what it
produced (:class:`FinetuneResult`), its work-folder file names and its event helper.

Its own module so that :mod:`training.finetune.run` (the steps of a run) and :mod:`training.finetune.training` (the
trainer and the written model) both import it from below and not each other. :mod:`training.finetune.run`
re-exports the public names (``from training.finetune.run import FinetuneRequest, finetune``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import ParameterError
from engine.events import event

EventCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_EVERY = 50  # iterations between checkpoints (also written on cancel)
STATE_FILE = "finetune.json"
REPORT_FILE = "report.json"
REFIT_DIR = "refit"  # the work folder's sub-folder of the second training (checkpoints of the refit)
CONFUSION_FILE = "confusion_matrix.png"
HOLDOUT_MODEL = "holdout_model.rspmodel"


@dataclass(frozen=True)
class Recipe:
    """Training defaults of one architecture (the CLI's ``--iters``/``--batch-size``/``--tile`` override them)."""

    iters: int
    batch_size: int
    tile: int
    lr: float
    warmup_iters: int
    weight_decay: float = 0.01
    # measured on real scenes (python -m bench.finetune_quality): crops drawn anywhere in the labelled area,
    # centred on a class chosen ∝ pixels ** 0.5, mild rescaling and no photometric distortion (hue shifts erase the
    # colour that tells land covers apart), the loss averaged over labelled pixels; the seed's fixed chips with its
    # augmentation (0.5-2× rescale, photometric) collapsed onto the majority class on small areas
    random_crops: bool = True  # crops drawn anywhere (training.finetune.chips.RandomCropDataset), else fixed chips
    ratio_range: tuple[float, float] = (0.75, 1.5)  # random rescale factors
    class_power: float = 0.5  # class sampling ∝ pixels ** class_power (random crops only)
    photometric: bool = False  # mmseg's photometric distortion (8-bit inputs)
    backbone_lr_mult: float = 1.0  # the backbone's learning rate relative to the heads'
    labelled_mean: bool = True  # loss averaged over labelled pixels (else over all pixels, as the seed's)


# CPU-sized for the demo network; GPU-sized for the RSP networks (they run on a CPU too, slowly).
RECIPES: dict[str, Recipe] = {
    "lite_resnet": Recipe(iters=300, batch_size=4, tile=256, lr=6e-4, warmup_iters=20, backbone_lr_mult=0.3),
    "rsp_resnet50": Recipe(iters=2000, batch_size=8, tile=512, lr=1e-4, warmup_iters=100),
    "rsp_swin_t": Recipe(iters=2000, batch_size=8, tile=512, lr=6e-5, warmup_iters=100),
    "rsp_vitaev2_s": Recipe(iters=2000, batch_size=8, tile=512, lr=6e-5, warmup_iters=100),
}
DEFAULT_RECIPE = Recipe(iters=1000, batch_size=4, tile=512, lr=1e-4, warmup_iters=50)


@dataclass(frozen=True)
class FinetuneRequest:
    """What ``python -m training finetune`` was asked (see its ``--help``; None = the recipe's default)."""

    rasters: tuple[str, ...]
    labels: tuple[str, ...]
    output: str
    class_field: str | None = None
    init: str | None = None
    backbone: str | None = None
    arch: str | None = None
    iters: int | None = None
    work_dir: str | None = None
    resume: bool = False
    device: str | None = None
    batch_size: int | None = None
    tile: int | None = None
    gsd: float | None = None
    freeze_backbone: bool = False
    val_fraction: float = 0.2
    classes: str | None = None
    bands: tuple[int, ...] | None = None
    seed: int = 0
    overwrite: bool = False
    refit: bool = True  # after the hold-out is measured, train again on all labels (see training.finetune.run)

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction <= 0.5:
            raise ParameterError(f"--val-fraction must be in (0, 0.5], got {self.val_fraction}")
        if self.iters is not None and self.iters < 1:
            raise ParameterError(f"--iters must be >= 1, got {self.iters}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ParameterError(
                f"--batch-size must be >= 2, got {self.batch_size}", "BatchNorm needs at least 2 chips per step"
            )
        if self.tile is not None and not (64 <= self.tile <= 2048 and self.tile % 32 == 0):
            raise ParameterError(f"--tile must be a multiple of 32 in 64..2048, got {self.tile}")

    @property
    def work_folder(self) -> str:
        """``--work-dir``, else ``<output stem>_finetune`` next to the output."""
        return self.work_dir or os.path.splitext(os.path.abspath(self.output))[0] + "_finetune"


@dataclass
class FinetuneResult:
    """The written model file, the hold-out summary (:func:`training.metrics.summarize`) and the report path."""

    model: str
    metrics: dict[str, Any]
    report: str
    seconds: float


def emit(on_event: EventCallback | None, name: str, **fields: Any) -> None:
    """Send the event ``name`` (:mod:`engine.events`) with ``fields`` to ``on_event`` when there is one."""
    if on_event is not None:
        on_event(event(name, **fields))


def created_today() -> str:
    """ISO date for provenance."""
    return datetime.date.today().isoformat()
