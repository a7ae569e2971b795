"""What the registry knows about one network: :class:`ArchSpec`, declared by each model file next to its backbone.

A backbone is an ``nn.Module`` whose ``forward(x)`` on (B, 3, H, W) returns four maps at strides 4, 8, 16, 32 and
whose ``out_channels`` attribute states their channels (timm's ``features_only`` networks: their ``feature_info``).
Everything else the engine and the trainer need to know about it (checkpoint-key rules, square inputs only, DDP's
unused parameters, head widths) is an :class:`ArchSpec` field, so a model file states each fact once and
``engine.models.ARCHS`` maps names to these specs, one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from engine.checkpoints import ModelError

NUM_FEATURE_MAPS = 4  # strides 4, 8, 16, 32: what UPerHead takes
# Per-stage output norms that segmentation backbones add and RSP's classification files lack (Swin, ViTAE).
STAGE_OUTPUT_NORMS = tuple(f"norm{i}.*" for i in range(NUM_FEATURE_MAPS))


class BackboneContractError(ModelError, TypeError):
    """A backbone module does not state the channels of its four feature maps (``out_channels``)."""


@dataclass(frozen=True)
class ArchSpec:
    """One network preset: a backbone factory and the facts the engine, loaders and trainer need about it.

    Attributes:
        backbone: factory of the backbone module (returns 4 maps at strides 4..32; states their channels in its
            ``out_channels`` attribute).
        channels: UPerHead width (512 in RSP).
        aux_channels: FCNHead width (256 in RSP).
        square_only: backbone accepts square inputs only.
        find_unused_parameters: the backbone has parameters that ``forward`` never uses (DDP must be told).
        backbone_unused: checkpoint key patterns of RSP's pretrained backbone files that the backbone does not use.
        backbone_uninitialised: backbone keys that RSP's pretrained files do not carry (they keep their init values).
        backbone_dropped: checkpoint key patterns RSP's ``init_weights`` deletes before loading (the network keeps the
            values it computed itself; they are also allowed to be absent).
        checkpoint_keys: where RSP's ``init_weights`` looks for the weights in a backbone file, in order.
        description: one line for humans.
        bf16_agreement: share of pixels whose label is the same computed in bfloat16 (autocast) as in float32, on a
            trained model of this architecture over a real raster (``python -m bench.precision``); None when not
            measured. ``--precision auto`` uses bf16 only at ≥ 0.995 (:mod:`engine.precision`).
    """

    backbone: Callable[[], nn.Module]
    channels: int = 512
    aux_channels: int = 256
    square_only: bool = False
    find_unused_parameters: bool = False
    backbone_unused: tuple[str, ...] = ()
    backbone_uninitialised: tuple[str, ...] = ()
    backbone_dropped: tuple[str, ...] = ()
    checkpoint_keys: tuple[str, ...] = ("state_dict", "model")
    description: str = ""
    bf16_agreement: float | None = None


def feature_channels(backbone: nn.Module) -> tuple[int, ...]:
    """The channels of ``backbone``'s four feature maps, as its ``out_channels`` attribute states them.

    timm's ``features_only`` networks state them in ``feature_info`` instead; that is read when ``out_channels`` is
    absent.

    Raises:
        BackboneContractError: neither is there, or they are not four positive integers.
    """
    channels: Any = getattr(backbone, "out_channels", None)
    timm_info: Any = getattr(backbone, "feature_info", None)
    if channels is None and timm_info is not None and hasattr(timm_info, "channels"):
        channels = timm_info.channels()
    try:
        values = tuple(int(c) for c in channels)
    except (TypeError, ValueError):
        values = ()
    if len(values) != NUM_FEATURE_MAPS or min(values) < 1:
        raise BackboneContractError(
            f"{type(backbone).__name__} must state the channels of its {NUM_FEATURE_MAPS} feature maps as "
            f"`self.out_channels = (c1, c2, c3, c4)`, got {channels!r}"
        )
    return values
