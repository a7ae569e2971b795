"""Training configurations: one frozen dataclass, the six RSP seed presets and small CPU presets.

The seed values (RSP_SPEC §2) are written out in each preset instead of being inherited from base files, so a preset
reads as the recipe: the data set's facts (classes, ignore index, bands, GSD, title) from ``engine.classes``, the
optimiser as ``_SGD_R50`` or ``_ADAMW`` (CPU presets change only their lr and warm-up), and the rest in the preset.
``python -m training show NAME`` prints one in full; ``--set key=value`` overrides fields.

Batch size: ``batch_size`` is the *total* batch per optimiser step (8 in the paper). ``samples_per_gpu`` is what one
process holds in memory at once; the trainer accumulates ``batch_size / (world_size * samples_per_gpu)`` micro-batches
per step so the total stays 8 on fewer GPUs (see ``training.trainer``).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from engine.classes import RSP_MEAN, RSP_STD, dataset_preset

SEED_TOTAL_BATCH = 8
SEED_MAX_ITERS = 80_000
SEED_INTERVAL = 8_000  # checkpoint and evaluation interval of the seed
SWIN_VITAE_NO_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table", "norm")
DATASETS = ("potsdam", "isaid", "custom")  # custom: an analyst's own labels (python -m training finetune)
OPTIMIZERS = ("sgd", "adamw")


# ModelInfo field ← TrainConfig field, for exported model files
_MODEL_INFO_FROM_CONFIG = (
    ("bands", "bands"), ("mean", "mean"), ("std", "std"), ("gsd_m", "gsd_m"),
    ("tile_size", "test_tile"), ("stride", "test_stride"), ("ignore_index", "ignore_index"),
)  # fmt: skip


class ConfigError(ValueError):
    """A configuration is unknown or invalid; the message names the field and the valid values."""


@dataclass(frozen=True)
class TrainConfig:
    """Complete recipe for one training run and its evaluation.

    Attributes:
        name: preset name (free text for custom configs).
        arch: network name for ``engine.models.build_segmentor``.
        dataset: ``"potsdam"`` or ``"isaid"``: selects class names, palette and label conventions.
        data_root: folder written by the converter (``img_dir/<split>`` + ``ann_dir/<split>`` for Potsdam,
            ``<split>/images`` + ``<split>/labels`` for iSAID).
        train_split / val_split / test_split: split folder names.
        num_classes: logits of the heads. ignore_index: label value ignored by the loss and the metrics.
        crop_size: training crop side (pixels). resize_scale: the ``img_scale`` side of the training Resize.
        ratio_range: random rescale factor range (``None`` = single scale: long side to ``resize_scale``).
        cat_max_ratio: RandomCrop retries while one label covers more than this share of the crop (1.0 = off).
        flip_prob: horizontal flip probability. photometric: apply mmseg's PhotoMetricDistortion.
        seg_pad_val: label value of padded pixels.
        mean / std: per-channel normalisation in 0..255 units, channel order as stored in the image files.
        batch_size: total images per optimiser step. samples_per_gpu: images per forward pass and process.
        max_iters: optimiser steps. optimizer: ``"sgd"`` or ``"adamw"``; lr, momentum, betas, weight_decay as usual.
        no_decay_keys: parameters whose full name contains one of these get weight decay 0 (mmcv substring rule).
        lr_power / min_lr: poly schedule; warmup_iters / warmup_ratio: linear warm-up (0 iterations = none).
        aux_weight: weight of the auxiliary FCN head's loss.
        checkpoint_interval / val_interval / log_interval: in iterations (0 disables validation).
        test_tile / test_stride: sliding-window inference. flip_test: flip TTA (mean of softmax over orig + hflip).
        test_keep_ratio_scale: iSAID's test Resize: images are scaled keep-ratio to fit this square, padded to it
            with raw 0 and the prediction is stretched back to the original size, as mmseg 0.21 does (``None`` =
            original size).
        num_workers: data-loader processes per rank. seed: base random seed (rank is added).
        amp: float16 autocast + GradScaler on CUDA. cpu_bf16: bfloat16 autocast on CPU.
        max_train_samples: use only the first N training samples (0 = all); for tests and demos.
        bands / gsd_m / dataset_title: metadata copied into exported model files.
    """

    name: str
    arch: str
    dataset: str
    data_root: str
    num_classes: int
    ignore_index: int
    crop_size: int
    resize_scale: int
    ratio_range: tuple[float, float] | None
    cat_max_ratio: float
    seg_pad_val: int
    samples_per_gpu: int
    optimizer: str
    lr: float
    weight_decay: float
    lr_power: float
    min_lr: float
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "val"
    flip_prob: float = 0.5
    photometric: bool = True
    mean: tuple[float, float, float] = RSP_MEAN
    std: tuple[float, float, float] = RSP_STD
    batch_size: int = SEED_TOTAL_BATCH
    max_iters: int = SEED_MAX_ITERS
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    no_decay_keys: tuple[str, ...] = ()
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    aux_weight: float = 0.4
    checkpoint_interval: int = SEED_INTERVAL
    val_interval: int = SEED_INTERVAL
    log_interval: int = 50
    test_tile: int = 512
    test_stride: int = 384
    flip_test: bool = False
    test_keep_ratio_scale: int | None = None
    num_workers: int = 4
    seed: int = 0
    amp: bool = True
    cpu_bf16: bool = False
    max_train_samples: int = 0
    bands: tuple[str, ...] = ("red", "green", "blue")
    gsd_m: float | None = None
    dataset_title: str = ""
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.dataset not in DATASETS:
            problems.append(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.num_classes < 1:
            problems.append("num_classes must be >= 1")
        if self.crop_size < 1 or self.resize_scale < 1 or self.test_tile < 1:
            problems.append("crop_size, resize_scale and test_tile must be >= 1")
        if not 1 <= self.test_stride <= self.test_tile:
            problems.append(f"test_stride must be in 1..test_tile ({self.test_tile})")
        if self.ratio_range is not None and not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            problems.append("ratio_range must be (low, high) with 0 < low <= high")
        if not 0 < self.cat_max_ratio <= 1:
            problems.append("cat_max_ratio must be in (0, 1]")
        if self.samples_per_gpu < 1 or self.batch_size < 1 or self.batch_size % self.samples_per_gpu:
            problems.append("batch_size must be a positive multiple of samples_per_gpu")
        if self.max_iters < 1 or self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            problems.append("max_iters >= 1, lr > 0, min_lr >= 0 and weight_decay >= 0 are required")
        if self.warmup_iters < 0 or not 0 < self.warmup_ratio <= 1:
            problems.append("warmup_iters >= 0 and 0 < warmup_ratio <= 1 are required")
        if self.checkpoint_interval < 1 or self.val_interval < 0 or self.log_interval < 1:
            problems.append("checkpoint_interval >= 1, val_interval >= 0, log_interval >= 1 are required")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            problems.append("mean and std need 3 values, std > 0")
        if problems:
            raise ConfigError(f"invalid config {self.name!r}: " + "; ".join(problems))

    def model_info_fields(self, value_range: tuple[float, float] = (0.0, 255.0)) -> dict[str, typing.Any]:
        """What a model file (``engine.model_file.ModelInfo``) takes from this recipe: inputs, GSD, window, title.

        Args:
            value_range: raw value range the network was trained on (the recipes here all read 8-bit images).
        """
        fields = {key: getattr(self, attr) for key, attr in _MODEL_INFO_FROM_CONFIG}
        return {**fields, "value_range": value_range, "dataset": self.dataset_title or self.dataset}

    def to_dict(self) -> dict[str, typing.Any]:
        """Every field by name (tuples stay tuples; JSON turns them into lists)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as indented JSON, readable by :func:`load_config`."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, typing.Any]) -> TrainConfig:
        """The config :meth:`to_dict` described (lists become tuples).

        Raises:
            ConfigError: unknown fields (the valid ones are listed) or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; valid fields: {sorted(known)}")
        clean: dict[str, typing.Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**clean)


def _dataset_fields(dataset: str) -> dict[str, typing.Any]:
    """The fields a data set fixes, as ``engine.classes`` states them (the one place engine and training read).

    The head's classes, the ignored label (also the label of padded pixels), input bands, GSD, the seed's
    sliding window and the data set's title, which exported model files carry.
    """
    preset = dataset_preset(dataset)
    return dict(
        dataset=dataset,
        num_classes=len(preset.class_names),
        ignore_index=preset.ignore_index,
        seg_pad_val=preset.ignore_index,
        bands=preset.bands,
        gsd_m=preset.gsd_m,
        test_tile=preset.tile_size,
        test_stride=preset.stride,
        dataset_title=preset.dataset,
    )


# The seed's training pipeline per data set (RSP_SPEC §2): crops, random rescale, class-balanced cropping, iSAID's
# flip TTA and keep-ratio test resize.
_PIPELINES: dict[str, dict[str, typing.Any]] = {
    "potsdam": dict(
        data_root="data/potsdam", crop_size=512, resize_scale=512, ratio_range=(0.5, 2.0), cat_max_ratio=0.75,
        num_workers=8,
    ),
    "isaid": dict(
        data_root="data/isaid", crop_size=896, resize_scale=896, ratio_range=None, cat_max_ratio=1.0,
        flip_test=True, test_keep_ratio_scale=896,
    ),
}  # fmt: skip


def _preset(dataset: str, name: str, arch: str, **kw: typing.Any) -> TrainConfig:
    """A seed recipe on ``dataset``: its facts, its pipeline, then ``kw`` (optimiser, batch, overrides)."""
    return TrainConfig(**{"name": name, "arch": arch, **_dataset_fields(dataset), **_PIPELINES[dataset], **kw})


def _potsdam(name: str, arch: str, **kw: typing.Any) -> TrainConfig:
    return _preset("potsdam", name, arch, **kw)


def _isaid(name: str, arch: str, **kw: typing.Any) -> TrainConfig:
    return _preset("isaid", name, arch, **kw)


_SGD_R50 = dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, lr_power=0.9, min_lr=1e-4)
_ADAMW = dict(
    optimizer="adamw",
    lr=6e-5,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    no_decay_keys=SWIN_VITAE_NO_DECAY_KEYS,
    lr_power=1.0,
    min_lr=0.0,
    warmup_iters=1500,
    warmup_ratio=1e-6,
)

PRESETS: dict[str, TrainConfig] = {
    "upernet_rsp_r50_potsdam": _potsdam("upernet_rsp_r50_potsdam", "rsp_resnet50", samples_per_gpu=8, **_SGD_R50),
    "upernet_rsp_r50_isaid": _isaid("upernet_rsp_r50_isaid", "rsp_resnet50", samples_per_gpu=4, **_SGD_R50),
    "upernet_rsp_swin_t_potsdam": _potsdam("upernet_rsp_swin_t_potsdam", "rsp_swin_t", samples_per_gpu=4, **_ADAMW),
    "upernet_rsp_swin_t_isaid": _isaid("upernet_rsp_swin_t_isaid", "rsp_swin_t", samples_per_gpu=4, **_ADAMW),
    "upernet_rsp_vitaev2_s_potsdam": _potsdam(
        "upernet_rsp_vitaev2_s_potsdam", "rsp_vitaev2_s", samples_per_gpu=4, **_ADAMW
    ),
    "upernet_rsp_vitaev2_s_isaid": _isaid("upernet_rsp_vitaev2_s_isaid", "rsp_vitaev2_s", samples_per_gpu=2, **_ADAMW),
    # Small CPU presets. Same pipeline and loss; tiny crops, batches and schedules.
    "cpu_tiny_potsdam": _potsdam(
        "cpu_tiny_potsdam",
        "lite_resnet",
        crop_size=128,
        resize_scale=128,
        samples_per_gpu=2,
        batch_size=2,
        max_iters=100,
        **{**_ADAMW, "lr": 5e-3, "warmup_iters": 5},
        checkpoint_interval=50,
        val_interval=0,
        log_interval=10,
        test_tile=128,
        test_stride=96,
        num_workers=0,
        amp=False,
        notes="for tests: overfits a handful of patches in seconds",
    ),
    "demo_lite_potsdam": _potsdam(
        "demo_lite_potsdam",
        "lite_resnet",
        data_root="build/demo_data/potsdam",
        bands=("red", "green", "blue"),
        dataset_title="ISPRS Potsdam tile 2_10, top-left 512x512 crop (RGB, 5 cm), left 3/4 (columns 0-383)",
        crop_size=256,
        resize_scale=512,
        samples_per_gpu=4,
        batch_size=4,
        max_iters=400,
        **{**_ADAMW, "lr": 1e-3, "warmup_iters": 20},
        checkpoint_interval=100,
        val_interval=100,
        log_interval=10,
        test_tile=256,
        test_stride=192,
        num_workers=0,
        notes="the bundled demo model (make demo-model): trained on scripts/prepare_demo_data.py's cut of the "
        "bundled Potsdam sample (train = left 3/4, val = right 1/4 held out); resize_scale 512 keeps the random "
        "rescale at 0.5-2x the native 5 cm",
    ),
}


def get_preset(name: str) -> TrainConfig:
    """Return the preset called ``name``.

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; valid presets: {', '.join(sorted(PRESETS))}") from None


def load_config(name_or_path: str) -> TrainConfig:
    """A preset by name, or a JSON file written by ``python -m training show NAME > file.json``."""
    if name_or_path.endswith(".json"):
        try:
            with open(name_or_path, encoding="utf-8") as f:
                return TrainConfig.from_dict(json.load(f))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {name_or_path}: {exc}") from exc
    return get_preset(name_or_path)


def _parse_value(text: str, annotation: str) -> typing.Any:
    if text.lower() in ("none", "null") and "None" in annotation:
        return None
    if "tuple" in annotation:
        items = [p for p in text.strip("()[] ").split(",") if p.strip()]
        elem_float = "float" in annotation
        elem_int = "int" in annotation and not elem_float
        return tuple(float(p) if elem_float else int(p) if elem_int else p.strip() for p in items)
    if annotation.startswith("bool"):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if annotation.startswith("int"):
        return int(text)
    if annotation.startswith("float"):
        return float(text)
    return text


def apply_overrides(config: TrainConfig, overrides: typing.Sequence[str]) -> TrainConfig:
    """Return ``config`` with ``key=value`` overrides applied (values parsed by the field's type).

    Tuples are written comma-separated (``mean=1,2,3``); ``none`` clears optional fields.

    Raises:
        ConfigError: malformed override, unknown key (valid keys listed) or a value of the wrong type.
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, typing.Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}")
        try:
            changes[key] = _parse_value(value.strip(), fields[key])
        except ValueError as exc:
            raise ConfigError(f"bad value for {key} ({fields[key]}): {exc}") from exc
    return dataclasses.replace(config, **changes)
