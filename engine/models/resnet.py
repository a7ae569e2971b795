"""ResNet backbones: RSP's ``Our_ResNet`` (torchvision-style ResNet-50) and a light one for the demo model.

RSP's ResNet-50 is the torchvision v1.5 network (7×7 single-conv stem, stride on the 3×3 conv, no dilation) returning
``layer1..layer4``. timm's ``resnet50`` with ``features_only`` has the same modules under the same names
(``conv1``, ``bn1``, ``layer{1-4}.{b}.conv{1-3}/bn{1-3}``, ``downsample.0/1``), so RSP keys load one to one.
"""

from __future__ import annotations

from torch import nn

from engine._torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()

import timm  # noqa: E402
from timm.models._features import FeatureListNet  # noqa: E402
from timm.models.resnet import BasicBlock, ResNet  # noqa: E402


def rsp_resnet50() -> nn.Module:
    """RSP-ResNet-50 features: channels (256, 512, 1024, 2048) at strides (4, 8, 16, 32)."""
    return timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))


def lite_resnet() -> nn.Module:
    """A light ResNet for the demo model: one BasicBlock per stage, widths (32, 64, 128, 256), ≈ 1.2 M parameters."""
    net = ResNet(
        block=BasicBlock,  # type: ignore[arg-type]
        layers=(1, 1, 1, 1),
        channels=(32, 64, 128, 256),
        stem_width=32,
        num_classes=0,
    )
    return FeatureListNet(net, out_indices=(1, 2, 3, 4))
