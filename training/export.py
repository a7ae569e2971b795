"""Training checkpoint → the engine's self-describing model file (``*.rspmodel``), ready for the QGIS plugin.

Classes: the head's ``num_classes`` names and colours (Potsdam: the 5 predicted classes, clutter is not one; iSAID:
16). Normalisation, bands, GSD, tile/stride, ignore index and data-set title come from the training config (stored
in our checkpoints; pass ``--config`` for mmseg checkpoints). Metrics come from a ``metrics.json`` written by
``python -m training test`` when given (``--metrics``). Provenance records the checkpoint's file name, sha256, the
iteration and the config name.
"""

from __future__ import annotations

import datetime
import json
import os
import typing

from engine.importer import sha256_of
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import TrainConfig, load_config

EXPORTED_METRICS = ("aAcc", "mIoU", "mF1")


def export_model(
    checkpoint: str,
    output: str,
    config: TrainConfig | None = None,
    metrics_json: str | None = None,
    description: str = "",
) -> typing.Any:
    """Write ``output`` (a model file) from ``checkpoint``; returns the written ``ModelInfo``.

    Raises:
        CheckpointError: unreadable checkpoint, no config available, or weights that do not fit the architecture.
    """
    from engine.model_file import ModelInfo, save_model_file
    from training.datasets import DATASET_CLASSES

    ckpt = load_checkpoint(checkpoint)
    if config is None:
        if "config" not in ckpt:
            raise CheckpointError(
                f"{checkpoint} carries no training config; pass --config PRESET (e.g. upernet_rsp_swin_t_potsdam)"
            )
        config = TrainConfig.from_dict(ckpt["config"])
    state = ckpt.get("state_dict", ckpt)
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    cls = DATASET_CLASSES[config.dataset]
    k = config.num_classes
    metrics: dict[str, float] = {}
    if metrics_json:
        with open(metrics_json, encoding="utf-8") as f:
            data = json.load(f)
        metrics = {m: float(data[m]) for m in EXPORTED_METRICS if data.get(m) is not None}
    sha = sha256_of(checkpoint)
    info = ModelInfo(
        arch=config.arch,
        num_classes=k,
        class_names=tuple(cls.CLASSES[:k]),
        colors=tuple(cls.PALETTE[:k]),
        **config.model_info_fields(),
        metrics=metrics,
        description=description
        or f"UperNet {config.arch} trained with preset {config.name} on {config.dataset_title or config.dataset}."
        + (f" Metrics on the {config.test_split} split." if metrics else ""),
        provenance={
            "source": os.path.basename(checkpoint),
            "sha256": sha,
            "iteration": ckpt.get("iter", ckpt.get("meta", {}).get("iter")),
            "config": config.name,
            "created": datetime.date.today().isoformat(),
            "tool": "python -m training export",
        },
    )
    # Check that the weights fit the network before writing anything.
    from engine.models import build_segmentor, load_state_dict_strict

    inference_state = {n: t for n, t in state.items() if not n.startswith("auxiliary_head.")}
    try:
        load_state_dict_strict(build_segmentor(config.arch, k, aux_head=False), inference_state)
    except Exception as exc:
        raise CheckpointError(f"{checkpoint} does not fit {config.arch} with {k} classes: {exc}") from exc
    save_model_file(output, inference_state, info)
    return info


def export_from_cli(
    checkpoint: str, output: str, config_name: str | None, metrics_json: str | None, description: str = ""
) -> typing.Any:
    """:func:`export_model` with the config given by preset name or JSON path (``None``: the checkpoint's own)."""
    config = load_config(config_name) if config_name else None
    return export_model(checkpoint, output, config, metrics_json, description)
