"""The RSP UperNets: ``build_segmentor``, checkpoint loaders and architecture presets.

Public API (called by checks outside this repository; keep it exactly):

- ``build_segmentor(arch, num_classes) -> nn.Module``: ``forward(x)`` on N×3×H×W returns logits N×K×H×W.
- ``load_mmseg_checkpoint(path, arch, num_classes) -> nn.Module`` (eval mode) for released mmseg 0.21 UperNet
  checkpoints (``{"meta", "state_dict"}``).
- ``load_rsp_backbone(path, arch) -> nn.Module`` for RSP's pretrained backbone files; ``forward(x)`` returns the four
  feature maps at strides 4, 8, 16, 32.

``arch`` is one of :data:`ARCHS`: the three RSP networks, plus ``lite_resnet``, a small network the project uses for
its demonstration model (not an RSP model). Each model file (``resnet.py``, ``swin.py``, ``vitae.py``) declares its
networks' facts as an :class:`ArchSpec` next to its code; :data:`ARCHS` names them, one line each, and
:func:`register_arch` adds one at run time (README, "For model authors").
"""

from __future__ import annotations

from typing import Any

from engine._torch_compat import ensure_torchvision_importable, use_persistent_compile_cache

use_persistent_compile_cache()
ensure_torchvision_importable()

import fnmatch  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from engine.checkpoints import (  # noqa: E402
    CheckpointError,
    CheckpointMismatchError,
    ModelError,
    UnknownArchError,
    load_state_dict_strict,
    read_checkpoint,
)
from engine.models import resnet, swin, vitae  # noqa: E402
from engine.models.segmentor import UperNet  # noqa: E402
from engine.models.spec import ArchSpec, BackboneContractError, feature_channels  # noqa: E402
from engine.models.vitae import ViTAEInputError  # noqa: E402

__all__ = [
    "ARCHS",
    "ArchSpec",
    "BackboneContractError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ModelError",
    "UnknownArchError",
    "UperNet",
    "ViTAEInputError",
    "arch_spec",
    "build_backbone",
    "build_segmentor",
    "load_mmseg_checkpoint",
    "load_rsp_backbone",
    "load_state_dict_strict",
    "read_checkpoint",
    "register_arch",
]


ARCHS: dict[str, ArchSpec] = {
    "rsp_resnet50": resnet.RSP_RESNET50,
    "rsp_swin_t": swin.RSP_SWIN_T,
    "rsp_vitaev2_s": vitae.RSP_VITAEV2_S,
    "lite_resnet": resnet.LITE_RESNET,
}


def register_arch(name: str, spec: ArchSpec, replace: bool = False) -> ArchSpec:
    """Add ``name`` to :data:`ARCHS` at run time (a model author's network outside this package); returns ``spec``.

    A registration lasts for the running process: a model file naming ``name`` loads only in a process that
    registered it first (import the module that calls this before running the engine or the trainer).

    Raises:
        ModelError: ``name`` is taken (pass ``replace=True`` to redefine it) or ``spec`` is not an :class:`ArchSpec`.
    """
    if not isinstance(spec, ArchSpec):
        raise ModelError(f"register_arch({name!r}, ...) needs an engine.models.ArchSpec, got {type(spec).__name__}")
    if name in ARCHS and not replace and ARCHS[name] is not spec:
        raise ModelError(f"arch {name!r} is already registered; choose another name or pass replace=True")
    ARCHS[name] = spec
    return spec


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` registered as ``arch``.

    Raises:
        UnknownArchError: ``arch`` is not registered; the message lists the valid names.
    """
    if arch not in ARCHS:
        raise UnknownArchError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    return ARCHS[arch]


def build_backbone(arch: str) -> nn.Module:
    """The backbone of ``arch`` alone: ``forward(x)`` returns the four feature maps (strides 4, 8, 16, 32)."""
    return arch_spec(arch).backbone()


def build_segmentor(arch: str, num_classes: int, aux_head: bool = True) -> UperNet:
    """Build the UperNet of ``arch`` with ``num_classes`` outputs (random initialisation, train mode).

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: K, the number of output channels.
        aux_head: build the auxiliary FCNHead (needed for training and for loading full mmseg checkpoints; never
            applied in ``forward``).
    """
    spec = arch_spec(arch)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    backbone = spec.backbone()
    return UperNet(
        arch,
        backbone,
        feature_channels(backbone),
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
    spec = arch_spec(arch)
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
