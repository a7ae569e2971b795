"""The iteration-based training loop: one GPU, several (torchrun + DDP), or CPU.

Per iteration ``it`` (0-based): set the LR of ``it`` (``training.schedule.lr_at``), run ``accum`` micro-batches of
``samples_per_gpu`` images on each of ``world_size`` ranks, back-propagate ``loss / accum`` (gradients of the global
batch of ``batch_size`` images, averaged by DDP over ranks), one optimiser step. ``accum = batch_size /
(world_size · samples_per_gpu)``, so the seed's batch of 8 is kept with fewer GPUs (BatchNorm statistics are then
over ``world_size · samples_per_gpu`` images per forward, not 8: the one known difference to the seed's set-up).

Data order: a ``DistributedSampler`` (shuffled, ``set_epoch`` per epoch) split over ranks; sample ``p`` of rank ``r``
is global sample ``g = p · world_size + r``; its augmentation uses ``numpy.random.default_rng(SeedSequence([seed,
g]))``. Nothing depends on DataLoader workers, so a resumed run sees the same samples and augmentations, and a
2-process step sees what a 1-process step on the same global batch sees.

Checkpoints every ``checkpoint_interval`` iterations and at the end (weights, optimiser, AMP scaler, iteration, RNG
states of every rank); ``resume=True`` continues from ``<work_dir>/latest.pth`` identically. Validation every
``val_interval`` iterations on rank 0 through :func:`training.evaluate.evaluate`. TensorBoard scalars in
``<work_dir>/tf_logs`` and one JSON object per logged iteration in ``<work_dir>/log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import typing

import numpy as np
import torch
from torch import nn

from training.checkpoint import LATEST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.config import TrainConfig
from training.datasets import build_dataset
from training.distributed import DistInfo, barrier, convert_sync_batchnorm, init_distributed
from training.losses import seed_loss
from training.progress import Progress
from training.schedule import build_optimizer, lr_at, set_lr


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad device, batch split, resume state); the message says what to change."""


class TrainingSegmentor(nn.Module):
    """Wraps an engine segmentor so one ``forward`` returns the decode and auxiliary logits (what DDP must wrap).

    ``forward(images (B, 3, H, W))`` → ``(decode (B, K, H/4, W/4), aux (B, K, H/16, W/16) or None)``.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode logits (B, K, H/4, W/4) and auxiliary logits (B, K, H/16, W/16) or None, of (B, 3, H, W)."""
        seg: typing.Any = self.segmentor
        feats = seg.backbone(images)  # 4 maps, strides 4, 8, 16, 32
        decode = seg.decode_head(feats)  # (B, K, H/4, W/4)
        aux_head = getattr(self.segmentor, "auxiliary_head", None)
        aux = aux_head(feats) if aux_head is not None else None  # (B, K, H/16, W/16)
        return decode, aux


class ResumableSampler(torch.utils.data.Sampler):
    """Infinite stream of ``(dataset index, augmentation seed)`` for one rank, starting at sample ``start``."""

    def __init__(self, dataset_len: int, info: DistInfo, seed: int, start: int = 0) -> None:
        self.base: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
            range(dataset_len),  # type: ignore[arg-type]  # only len() is used
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.info, self.seed, self.start = info, seed, start

    def __iter__(self) -> typing.Iterator[tuple[int, int]]:
        pos = self.start
        n = len(self.base)
        while True:
            self.base.set_epoch(pos // n)
            order = list(self.base)
            for index in order[pos % n :]:
                g = pos * self.info.world_size + self.info.rank
                yield index, int(np.random.SeedSequence([self.seed, g]).generate_state(1)[0])
                pos += 1


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """The training device: the engine's choice (:func:`engine.inference.select_device`; ``auto`` → CUDA when
    available, else CPU); under DDP on CUDA each rank takes ``cuda:<local_rank>``.

    Raises:
        TrainingError: CUDA asked for but not available, or an unknown device name.
    """
    from engine.errors import ParameterError
    from engine.inference import select_device

    try:
        chosen = select_device(None if device == "auto" else device)
    except ParameterError as exc:
        raise TrainingError(str(exc)) from exc
    if chosen.type == "cuda":
        if info.enabled:
            chosen = torch.device(f"cuda:{info.local_rank}")
        torch.cuda.set_device(chosen)
    return chosen


def build_model(config: TrainConfig, load_backbone: str | None = None) -> nn.Module:
    """The engine segmentor with the auxiliary head, optionally initialised from an RSP backbone checkpoint."""
    from engine.models import build_segmentor

    model = build_segmentor(config.arch, config.num_classes, aux_head=True)
    if load_backbone:
        from engine.models import load_rsp_backbone

        backbone = load_rsp_backbone(load_backbone, config.arch)
        model.backbone.load_state_dict(backbone.state_dict())
    return model


class Trainer:
    """Runs :class:`TrainConfig` into ``work_dir``.

    Args:
        config: the recipe. work_dir: checkpoints, logs, TensorBoard.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``. load_backbone: RSP ``rsp-*-ckpt.pth`` for the backbone.
        model: a prebuilt segmentor (tests); built from ``config`` when ``None``.
        stream: where the progress bar and log lines go (stderr by default).
    """

    def __init__(
        self,
        config: TrainConfig,
        work_dir: str,
        device: str = "auto",
        load_backbone: str | None = None,
        model: nn.Module | None = None,
        stream: typing.TextIO | None = None,
    ) -> None:
        self.config, self.work_dir = config, work_dir
        self.info = init_distributed(
            "cuda" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"
        )
        self.device = resolve_device(device, self.info)
        per_step = self.info.world_size * config.samples_per_gpu
        if config.batch_size % per_step:
            raise TrainingError(
                f"batch_size {config.batch_size} is not a multiple of world_size {self.info.world_size} × "
                f"samples_per_gpu {config.samples_per_gpu}; change --set samples_per_gpu=... or the process count"
            )
        self.accum = config.batch_size // per_step
        self.stream = stream if stream is not None else sys.stderr
        torch.manual_seed(config.seed + self.info.rank)
        self.segmentor = model if model is not None else build_model(config, load_backbone)
        self.net: nn.Module = TrainingSegmentor(self.segmentor)
        if self.info.enabled:
            self.net = convert_sync_batchnorm(self.net, self.device.type)
        self.net.to(self.device)
        self.optimizer = build_optimizer(self.net, config)
        use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        if self.device.type == "cuda":
            self.autocast: typing.Any = torch.autocast("cuda", dtype=torch.float16, enabled=use_amp)
            torch.backends.cudnn.benchmark = True
        else:
            self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.cpu_bf16)
        self.model: nn.Module = self.net
        if self.info.enabled:
            from engine.models import arch_spec

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=ids, find_unused_parameters=arch_spec(config.arch).find_unused_parameters
            )
        self.iteration = 0
        self.frozen: list[nn.Module] = []  # modules kept in eval mode while training (e.g. a frozen backbone)

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Segmentor weights with mmseg key names (no wrapper prefixes)."""
        return {k: v.detach().cpu() for k, v in self.segmentor.state_dict().items()}

    def _gather_rng(self) -> list[dict[str, typing.Any]]:
        mine = rng_state()
        if not self.info.enabled:
            return [mine]
        out: list[typing.Any] = [None] * self.info.world_size
        torch.distributed.all_gather_object(out, mine)
        return out

    def save(self) -> str | None:
        """Write a checkpoint of this iteration (rank 0; every rank's RNG state gathered); returns its path there."""
        rng = self._gather_rng()
        path = None
        if self.info.is_main:
            names, palette = self.class_meta()
            payload = {
                "state_dict": self.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "iter": self.iteration,
                "config": self.config.to_dict(),
                "meta": {
                    "CLASSES": list(names),
                    "PALETTE": [list(c) for c in palette],
                    "iter": self.iteration,
                },
                "rng": rng,
            }
            path = save_checkpoint(self.work_dir, payload)
        barrier(self.info)
        return path

    def class_meta(self) -> tuple[typing.Sequence[str], typing.Sequence[typing.Sequence[int]]]:
        """Class names and palette stored in checkpoints (the data set's; fine-tuning overrides it)."""
        from training.datasets import DATASET_CLASSES

        cls = DATASET_CLASSES[self.config.dataset]
        return cls.CLASSES, cls.PALETTE

    def resume(self) -> bool:
        """Load ``<work_dir>/latest.pth`` if present; returns whether it did."""
        path = os.path.join(self.work_dir, LATEST)
        if not os.path.isfile(path):
            self._log(f"no {path}: starting from iteration 0")
            return False
        ckpt = load_checkpoint(path)
        if ckpt.get("config", {}).get("max_iters") not in (None, self.config.max_iters):
            raise TrainingError(
                f"{path} was trained with max_iters={ckpt['config']['max_iters']}, this run has "
                f"{self.config.max_iters}; the LR schedule would differ. Use the same config or another --work-dir"
            )
        self.segmentor.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iter"])
        rng = ckpt.get("rng") or []
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])
        else:
            self._log(f"checkpoint has RNG states of {len(rng)} ranks, this run has {self.info.world_size}: reseeding")
        self._log(f"resumed from {path} at iteration {self.iteration}")
        return True

    # --- loop --------------------------------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.info.is_main:
            self.stream.write(text + "\n")
            self.stream.flush()

    def train_dataset(self) -> torch.utils.data.Dataset:
        """The training samples, indexed by ``(index, augmentation seed)``: the config's split (fine-tuning
        overrides this)."""
        return build_dataset(self.config, self.config.train_split, train=True)

    def _loader(self) -> typing.Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        dataset = self.train_dataset()
        start = self.iteration * self.accum * cfg.samples_per_gpu
        size = len(typing.cast(typing.Sized, dataset))  # map-style datasets have a length; torch's Dataset type has not
        sampler = ResumableSampler(size, self.info, cfg.seed, start=start)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.samples_per_gpu,
            sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),  # keep the global RNG (dropout) untouched
        )
        return iter(loader)

    def loss(
        self, decode: torch.Tensor, aux: torch.Tensor | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one micro-batch and its parts (the seed's; fine-tuning overrides it)."""
        return seed_loss(decode, aux, labels, self.config.ignore_index, self.config.aux_weight)

    def train_step(self, batches: typing.Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One optimiser step at ``self.iteration`` over ``accum`` micro-batches; returns averaged loss parts."""
        cfg = self.config
        lr = lr_at(self.iteration, cfg)
        set_lr(self.optimizer, lr)
        self.net.train()
        for module in self.frozen:
            module.eval()  # frozen parts keep their BatchNorm statistics too
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(self.accum):
            images, labels = next(batches)
            images = images.to(self.device, non_blocking=True)  # (B, 3, H, W)
            labels = labels.to(self.device, non_blocking=True)  # (B, H, W)
            ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
            # DDP all-reduces the gradients on the last micro-batch only
            ctx = ddp.no_sync() if ddp is not None and micro < self.accum - 1 else contextlib.nullcontext()
            with ctx:
                with self.autocast:
                    decode, aux = self.model(images)
                loss, parts = self.loss(decode, aux, labels)
                self.scaler.scale(loss / self.accum).backward()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / self.accum
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        totals["lr"] = lr
        return totals

    def run(self, resume: bool = False, stop_at: int | None = None) -> dict[str, typing.Any]:
        """Train until ``max_iters`` (or ``stop_at``, to simulate an interruption in tests).

        Returns:
            ``{"iter", "last": loss parts of the last step, "first": of the first step run, "val": last validation}``.
        """
        cfg = self.config
        if resume:
            self.resume()
        os.makedirs(self.work_dir, exist_ok=True)
        writer = None
        if self.info.is_main:
            with open(os.path.join(self.work_dir, "config.json"), "w", encoding="utf-8") as f:
                f.write(cfg.to_json())
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(os.path.join(self.work_dir, "tf_logs"))
            except ImportError:  # pragma: no cover - tensorboard is pinned in requirements
                self._log("tensorboard not installed: no TensorBoard scalars")
        end = cfg.max_iters if stop_at is None else min(stop_at, cfg.max_iters)
        self._log(
            f"training {cfg.name} ({cfg.arch}) on {self.device}, world_size {self.info.world_size}, "
            f"{cfg.samples_per_gpu}/process × accumulation {self.accum} = batch {cfg.batch_size}, "
            f"iterations {self.iteration}→{end}"
        )
        progress = Progress(cfg.max_iters, "train", stream=self.stream, enabled=self.info.is_main)
        progress.reset_origin(self.iteration)
        batches = self._loader()
        result: dict[str, typing.Any] = {"first": None, "last": None, "val": None}
        log_path = os.path.join(self.work_dir, "log.jsonl")
        t0 = time.monotonic()
        window: dict[str, float] = {}
        window_n = 0
        while self.iteration < end:
            parts = self.train_step(batches)
            if result["first"] is None:
                result["first"] = parts
            result["last"] = parts
            it = self.iteration
            for k, v in parts.items():
                window[k] = window.get(k, 0.0) + v
            window_n += 1
            if self.info.is_main and (it % cfg.log_interval == 0 or it == end):
                # Averages over the iterations since the last log line, as mmseg's logger reports them.
                mean = {k: v / window_n for k, v in window.items()}
                record = {"iter": it, **mean, "lr": parts["lr"], "time_per_iter_s": (time.monotonic() - t0) / window_n}
                window, window_n, t0 = {}, 0, time.monotonic()
                if self.device.type == "cuda":
                    record["max_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k, v in record.items():
                        if k != "iter":
                            writer.add_scalar(f"train/{k}", v, it)
            progress.update(it, force=it == end, loss=parts["loss"], lr=parts["lr"])
            if it % cfg.checkpoint_interval == 0 or it == cfg.max_iters:
                self.save()
            if cfg.val_interval and (it % cfg.val_interval == 0 or it == cfg.max_iters):
                result["val"] = self.validate(writer)
        if writer is not None:
            writer.close()
        result["iter"] = self.iteration
        return result

    def validate(self, writer: typing.Any = None) -> dict[str, typing.Any] | None:
        """Evaluate on ``val_split`` on rank 0 (others wait); logs mIoU/mF1/aAcc."""
        summary = None
        if self.info.is_main:
            from training.evaluate import evaluate

            cfg = self.config
            summary = evaluate(self.segmentor, cfg, build_dataset(cfg, cfg.val_split, train=False), self.device)
            self._log(f"iter {self.iteration} val: aAcc {summary['aAcc']} mIoU {summary['mIoU']} mF1 {summary['mF1']}")
            if writer is not None:
                for k in ("aAcc", "mIoU", "mF1"):
                    writer.add_scalar(f"val/{k}", summary[k], self.iteration)
        barrier(self.info)
        return summary
