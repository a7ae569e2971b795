"""The RSP UperNets: ``build_segmentor``, checkpoint loaders and architecture presets.

Public API (called by checks outside this repository; keep it exactly):

- ``build_segmentor(arch, num_classes) -> nn.Module``: ``forward(x)`` on N×3×H×W returns logits N×K×H×W.
- ``load_mmseg_checkpoint(path, arch, num_classes) -> nn.Module`` (eval mode) for released mmseg 0.21 UperNet
  checkpoints (``{"meta", "state_dict"}``).
- ``load_rsp_backbone(path, arch) -> nn.Module`` for RSP's pretrained backbone files; ``forward(x)`` returns the four
  feature maps at strides 4, 8, 16, 32.

``arch`` is one of :data:`ARCHS`: the three RSP networks, plus ``lite_resnet``, a small network the project uses for
its demonstration model (not an RSP model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine._torch_compat import ensure_torchvision_importable, use_persistent_compile_cache

use_persistent_compile_cache()
ensure_torchvision_importable()

import fnmatch  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from engine.models.checkpoints import (  # noqa: E402
    CheckpointError,
    CheckpointMismatchError,
    ModelError,
    UnknownArchError,
    load_state_dict_strict,
    read_checkpoint,
)
from engine.models.resnet import lite_resnet, rsp_resnet50  # noqa: E402
from engine.models.segmentor import UperNet  # noqa: E402
from engine.models.swin import SwinTransformer  # noqa: E402
from engine.models.vitae import ViTAEInputError, ViTAEv2  # noqa: E402

__all__ = [
    "ARCHS",
    "ArchSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "ModelError",
    "UnknownArchError",
    "UperNet",
    "ViTAEInputError",
    "build_backbone",
    "build_segmentor",
    "load_mmseg_checkpoint",
    "load_rsp_backbone",
    "load_state_dict_strict",
    "read_checkpoint",
]


@dataclass(frozen=True)
class ArchSpec:
    """One network preset.

    Attributes:
        backbone: factory of the backbone module (returns 4 maps at strides 4..32).
        in_channels: channels of those maps.
        channels: UPerHead width (512 in RSP).
        aux_channels: FCNHead width (256 in RSP).
        square_only: backbone accepts square inputs only.
        backbone_unused: checkpoint key patterns of RSP's pretrained backbone files that the backbone does not use.
        backbone_uninitialised: backbone keys that RSP's pretrained files do not carry (they keep their init values).
        backbone_dropped: checkpoint key patterns RSP's ``init_weights`` deletes before loading (the network keeps the
            values it computed itself; they are also allowed to be absent).
        checkpoint_keys: where RSP's ``init_weights`` looks for the weights in a backbone file, in order.
        description: one line for humans.
    """

    backbone: Callable[[], nn.Module]
    in_channels: tuple[int, int, int, int]
    channels: int = 512
    aux_channels: int = 256
    square_only: bool = False
    backbone_unused: tuple[str, ...] = ()
    backbone_uninitialised: tuple[str, ...] = ()
    backbone_dropped: tuple[str, ...] = ()
    checkpoint_keys: tuple[str, ...] = ("state_dict", "model")
    description: str = ""


_STAGE_NORMS = ("norm0.*", "norm1.*", "norm2.*", "norm3.*")

ARCHS: dict[str, ArchSpec] = {
    "rsp_resnet50": ArchSpec(
        backbone=rsp_resnet50,
        in_channels=(256, 512, 1024, 2048),
        backbone_unused=("fc.*",),
        description="UperNet on RSP-ResNet-50 (torchvision-style ResNet-50)",
    ),
    "rsp_swin_t": ArchSpec(
        backbone=SwinTransformer,
        in_channels=(96, 192, 384, 768),
        backbone_unused=("head.*", "norm.*", "*attn_mask"),
        backbone_uninitialised=(*_STAGE_NORMS, "*relative_position_index"),
        description="UperNet on RSP-Swin-T (RSP's pad-then-roll Swin variant)",
    ),
    "rsp_vitaev2_s": ArchSpec(
        backbone=ViTAEv2,
        in_channels=(64, 128, 256, 512),
        square_only=True,
        backbone_unused=("head.*",),
        backbone_uninitialised=(*_STAGE_NORMS, "*relative_position_index"),
        backbone_dropped=("*relative_position_index", "*relative_coords_table", "*attn_mask"),
        checkpoint_keys=("state_dict", "state_dict_ema", "model"),
        description="UperNet on RSP-ViTAEv2-S (ViTAE_Window_NoShift_basic); square inputs only",
    ),
    "lite_resnet": ArchSpec(
        backbone=lite_resnet,
        in_channels=(32, 64, 128, 256),
        channels=64,
        aux_channels=32,
        description="small UperNet (1-block ResNet, widths 32..256, head width 64) for the demo model; not RSP",
    ),
}


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise UnknownArchError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    return ARCHS[arch]


def build_backbone(arch: str) -> nn.Module:
    """The backbone of ``arch`` alone: ``forward(x)`` returns the four feature maps (strides 4, 8, 16, 32)."""
    return _spec(arch).backbone()


def build_segmentor(arch: str, num_classes: int, aux_head: bool = True) -> UperNet:
    """Build the UperNet of ``arch`` with ``num_classes`` outputs (random initialisation, train mode).

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: K, the number of output channels.
        aux_head: build the auxiliary FCNHead (needed for training and for loading full mmseg checkpoints; never
            applied in ``forward``).
    """
    spec = _spec(arch)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    return UperNet(
        arch,
        spec.backbone(),
        spec.in_channels,
        num_classes,
        spec.channels,
        spec.aux_channels if aux_head else None,
        square_only=spec.square_only,
    )


def _strip_prefix(state: dict[str, Any], prefix: str, only_if_first: bool = False) -> dict[str, Any]:
    keys = list(state)
    if only_if_first and not (keys and keys[0].startswith(prefix)):
        return state
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_mmseg_checkpoint(path: str | os.PathLike[str], arch: str, num_classes: int) -> UperNet:
    """Load a released mmseg 0.21 UperNet checkpoint (``{"meta", "state_dict", ...}``) strictly, in eval mode.

    Keys map by prefix only (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``). A checkpoint without the
    auxiliary head (e.g. after mmseg's ``publish_model``) is accepted: the returned network then has none.

    Raises:
        CheckpointError: unreadable file. CheckpointMismatchError: keys or shapes do not match ``arch``/``num_classes``.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    state = _strip_prefix(dict(state), "module.", only_if_first=True)
    has_aux = any(k.startswith("auxiliary_head.") for k in state)
    model = build_segmentor(arch, num_classes, aux_head=has_aux)
    load_state_dict_strict(model, state)
    return model.eval()


def _matches_any(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_rsp_backbone(path: str | os.PathLike[str], arch: str) -> nn.Module:
    """Load an RSP pretrained backbone file (``rsp-resnet-50-ckpt.pth`` etc.) into ``arch``'s backbone, eval mode.

    Follows RSP's ``init_weights``: weights under ``state_dict``, (ViTAE only) ``state_dict_ema``, or ``model`` (or
    the file itself), ``backbone.`` and a leading ``module.`` stripped; ViTAE deletes its ``relative_position_index``,
    ``relative_coords_table`` and ``attn_mask`` entries first. The classifier (``fc.*``/``head.*``), Swin's final
    ``norm.*`` and ``attn_mask`` buffers are dropped explicitly; the per-stage output norms of Swin/ViTAE, which the
    classification networks lack, keep their initial values, as do ``relative_position_index`` buffers a file lacks
    (constants computed by the network). Anything else missing or unexpected is an error.
    """
    spec = _spec(arch)
    ckpt = read_checkpoint(path)
    for key in spec.checkpoint_keys:
        if key in ckpt and isinstance(ckpt[key], dict):
            state = dict(ckpt[key])
            break
    else:
        state = ckpt
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    state = _strip_prefix(state, "backbone.")
    state = _strip_prefix(state, "module.", only_if_first=True)
    state = {k: v for k, v in state.items() if not _matches_any(k, spec.backbone_dropped)}
    backbone = spec.backbone()
    load_state_dict_strict(
        backbone, state, allowed_unexpected=spec.backbone_unused, allowed_missing=spec.backbone_uninitialised
    )
    return backbone.eval()
