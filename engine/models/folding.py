"""Eval-time BatchNorm folding: ``conv → BatchNorm2d`` pairs become one conv with a bias.

In eval mode BatchNorm is the per-channel affine map ``y = (x − mean) · γ / √(var + ε) + β``; applied to a conv's
output it equals the conv with its output channels scaled by ``γ / √(var + ε)`` and a bias of ``β − mean · scale``
(plus the conv's own bias, scaled). Folding removes one full pass over every activation it touches (≈ 4 % of an
RSP-R50 forward on CPU, measured) and changes only float rounding (max |Δlogit| ≈ 1e-6 relative).

Only pairs whose order in ``forward`` is known are folded: consecutive ``Conv2d`` then ``BatchNorm2d`` children of
an ``nn.Sequential`` or of a container that runs its children in order (timm's ``FeatureListNet``), and the named
pairs ``conv``/``bn``, ``conv1``/``bn1`` … of the block types listed in :data:`NAMED_PAIR_TYPES` (whose ``forward``
applies each ``bnN`` right after ``convN``). Subclasses of ``BatchNorm2d`` (e.g. with a fused activation) are left.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]


def _named_pair_types() -> tuple[type[nn.Module], ...]:
    from timm.models.resnet import BasicBlock, Bottleneck

    from engine.models.heads import ConvModule

    return (ConvModule, BasicBlock, Bottleneck)


def _sequential_types() -> tuple[type[nn.Module], ...]:
    from timm.models._features import FeatureListNet

    return (nn.Sequential, FeatureListNet)


PAIR_NAMES = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _fold(conv: object, bn: object) -> nn.Conv2d | None:
    """The folded conv of a ``Conv2d`` followed by a plain ``BatchNorm2d`` with running statistics, else None."""
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return None
    return fuse_conv_bn_eval(conv, bn) if type(bn) is nn.BatchNorm2d and bn.track_running_stats else None


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every known ``conv → BatchNorm2d`` pair of ``model`` (in eval mode) in place; returns how many.

    Each folded conv gets the BatchNorm's affine map in its weights and bias, and the BatchNorm becomes
    ``nn.Identity`` under the same name, so module paths stay valid. Irreversible: load the network again for
    training or for the reference float order.

    Raises:
        ValueError: ``model`` is in training mode (BatchNorm then uses batch statistics, which do not fold).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    named, sequential = _named_pair_types(), _sequential_types()
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, named):
            for conv_name, bn_name in PAIR_NAMES:
                fused = _fold(getattr(module, conv_name, None), getattr(module, bn_name, None))
                if fused is not None:
                    setattr(module, conv_name, fused)
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
        elif isinstance(module, sequential):
            names = list(module._modules)
            for first, second in itertools.pairwise(names):
                fused = _fold(module._modules[first], module._modules[second])
                if fused is not None:
                    module._modules[first] = fused
                    module._modules[second] = nn.Identity()
                    folded += 1
    return folded
