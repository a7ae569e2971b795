"""Fixtures for the training tests: a converted-layout Potsdam folder from the real sample patch, and segmentors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "potsdam")
POTSDAM_IGNORE = 5


@pytest.fixture
def potsdam_root(tmp_path):
    """``img_dir/{train,val}`` + ``ann_dir/{train,val}`` holding the real 512² Potsdam patch (labels 0..5)."""
    root = tmp_path / "potsdam"
    label = np.array(Image.open(os.path.join(DATA, "2_10_0_0_512_512_label_6cls_ignore255_DERIVED.png")))
    label[label == 255] = POTSDAM_IGNORE
    for split in ("train", "val"):
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        shutil.copy(os.path.join(DATA, "2_10_0_0_512_512_rgb.png"), root / "img_dir" / split / "2_10_0_0_512_512.png")
        Image.fromarray(label).save(root / "ann_dir" / split / "2_10_0_0_512_512.png")
    # A second training sample (the mirrored patch) so that sampling order matters.
    image = np.array(Image.open(os.path.join(DATA, "2_10_0_0_512_512_rgb.png")))
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(root / "img_dir" / "train" / "2_10_mirrored.png")
    Image.fromarray(np.ascontiguousarray(label[:, ::-1])).save(root / "ann_dir" / "train" / "2_10_mirrored.png")
    return root


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _ConvBN(3, 16, 4)
        self.stages = nn.ModuleList([_ConvBN(16, 16, 2) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]  # (B, 16, H/4, W/4)
        for stage in self.stages:
            feats.append(stage(feats[-1]))  # strides 8, 16, 32
        return feats


class _Head(nn.Module):
    def __init__(self, num_classes: int, in_index: int) -> None:
        super().__init__()
        self.in_index = in_index
        self.conv = _ConvBN(16, 32)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(32, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[self.in_index]
        if self.in_index == 0:  # decode head: fuse the coarsest map, like UperNet's top-down path
            x = x + nn.functional.interpolate(feats[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(self.conv(x)))


class SmallSegmentor(nn.Module):
    """A small encoder-decoder with mmseg attribute names, used only while ``engine.models`` is not importable."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.decode_head = _Head(num_classes, 0)
        self.auxiliary_head = _Head(num_classes, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


def make_segmentor(arch: str, num_classes: int, seed: int = 0, dropout: bool = True) -> nn.Module:
    """The engine's network for ``arch`` (with aux head) when available, else :class:`SmallSegmentor`."""
    torch.manual_seed(seed)
    try:
        from engine.models import build_segmentor

        model = build_segmentor(arch, num_classes, aux_head=True)
    except ImportError:
        model = SmallSegmentor(num_classes)
    if not dropout:
        for m in model.modules():
            if isinstance(m, nn.Dropout | nn.Dropout2d):
                m.p = 0.0
    return model
