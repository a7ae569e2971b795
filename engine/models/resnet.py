"""ResNet backbones: RSP's ``Our_ResNet`` (torchvision-style ResNet-50) and a light one for the demo model.

RSP's ResNet-50 is the torchvision v1.5 network (7×7 single-conv stem, stride on the 3×3 conv, no dilation) returning
``layer1..layer4``. timm's ``resnet50`` with ``features_only`` has the same modules under the same names
(``conv1``, ``bn1``, ``layer{1-4}.{b}.conv{1-3}/bn{1-3}``, ``downsample.0/1``), so RSP keys load one to one.
Registry entries: :data:`RSP_RESNET50` and :data:`LITE_RESNET`.
"""

from __future__ import annotations

from torch import nn

from engine._torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()

import timm  # noqa: E402
from timm.models._features import FeatureListNet  # noqa: E402
from timm.models.resnet import BasicBlock, ResNet  # noqa: E402

from engine.models.spec import ArchSpec  # noqa: E402

FEATURE_INDICES = (1, 2, 3, 4)  # timm's feature levels of layer1..layer4 (strides 4..32)


def rsp_resnet50() -> nn.Module:
    """RSP-ResNet-50 features: channels (256, 512, 1024, 2048) at strides (4, 8, 16, 32), in ``feature_info``."""
    return timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=FEATURE_INDICES)


def lite_resnet() -> nn.Module:
    """A light ResNet for the demo model: one BasicBlock per stage, widths (32, 64, 128, 256), ≈ 1.2 M parameters."""
    net = ResNet(
        block=BasicBlock,  # type: ignore[arg-type]  # timm annotates an instance type; it takes the class
        layers=(1, 1, 1, 1),
        channels=(32, 64, 128, 256),
        stem_width=32,
        num_classes=0,
    )
    return FeatureListNet(net, out_indices=FEATURE_INDICES)


RSP_RESNET50 = ArchSpec(
    backbone=rsp_resnet50,
    backbone_unused=("fc.*",),  # the ImageNet/MillionAID classifier of RSP's file
    description="UperNet on RSP-ResNet-50 (torchvision-style ResNet-50)",
    # python -m bench.precision on a network trained 80 iterations on the Potsdam sample (README, "Precision")
    bf16_agreement=0.99805,
)
LITE_RESNET = ArchSpec(
    backbone=lite_resnet,
    channels=64,
    aux_channels=32,
    description="small UperNet (1-block ResNet, widths 32..256, head width 64) for the demo model; not RSP",
    bf16_agreement=0.99935,  # python -m bench.precision on the bundled demo model (README, "Precision")
)
