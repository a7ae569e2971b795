"""The README's "Adding a backbone" how-to, followed with a tiny backbone from model file to segmented GeoTIFF.

The how-to's three places, and what stands for each here:

1. the model file: :class:`TinyBackbone` and its :data:`TINY_EXTRA` ``ArchSpec`` below;
2. the registry line: ``register_arch(ARCH, TINY_EXTRA)`` (the run-time form of a line in ``engine.models.ARCHS``);
3. the preset lines: one entry added to ``training.config.PRESETS``.

Nothing else is touched: building, the forward pass, a training step, export to a model file and ``engine.predict``
all find the network through the registry. A model file names its arch, so it loads only in a process where the
arch is registered (checked at the end).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.classes import POTSDAM_CLASSES
from engine.model_file import ModelFileError, load_model_file, read_model_info
from engine.models import ARCHS, ArchSpec, build_segmentor, register_arch
from engine.predict import PredictRequest, predict
from tests.engine.conftest import potsdam_pixels, read
from training.config import PRESETS, get_preset
from training.export import export_model
from training.trainer import Trainer

ARCH = "tiny_extra_test"
PRESET = "tiny_extra_test_potsdam"


# --- 1. the model file ------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Four conv-BN-ReLU stages: (B, 3, H, W) → maps of channels (8, 16, 24, 32) at strides (4, 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels = (8, 16, 24, 32)
        self.stem = _conv_bn_relu(3, self.out_channels[0], 4)
        self.stages = nn.ModuleList(
            _conv_bn_relu(cin, cout, 2) for cin, cout in zip(self.out_channels, self.out_channels[1:], strict=False)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]  # (B, 8, H/4, W/4)
        for stage in self.stages:
            feats.append(stage(feats[-1]))  # (B, C_i, H/2^(i+2), W/2^(i+2))
        return feats


TINY_EXTRA = ArchSpec(backbone=TinyBackbone, channels=16, aux_channels=8, description="tiny test backbone; not RSP")


# --- 2. the registry line and 3. the preset line ------------------------------------------------------------------
@pytest.fixture
def extra_arch(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    register_arch(ARCH, TINY_EXTRA)
    preset = dataclasses.replace(
        get_preset("cpu_tiny_potsdam"), name=PRESET, arch=ARCH, bands=("red", "green", "blue"), num_workers=0
    )
    monkeypatch.setitem(PRESETS, PRESET, preset)
    yield ARCH
    ARCHS.pop(ARCH, None)


def _batch(crop: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real Potsdam crops, normalised, with labels drawn from a seeded generator."""
    pixels = torch.from_numpy(potsdam_pixels(crop, 2 * crop).astype(np.float32))
    images = torch.stack([pixels[:, :, :crop], pixels[:, :, crop:]])  # (2, 3, crop, crop)
    images = (images - 120.0) / 58.0
    labels = torch.randint(0, num_classes, (2, crop, crop), generator=torch.Generator().manual_seed(0))
    return images, labels


def test_an_extra_backbone_runs_from_registry_to_a_segmented_geotiff(extra_arch, make_raster, tmp_path: Path) -> None:
    config = get_preset(PRESET)

    # build and forward
    torch.manual_seed(0)
    net = build_segmentor(extra_arch, config.num_classes).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 3, 96, 80))
    assert logits.shape == (1, config.num_classes, 96, 80) and torch.isfinite(logits).all()

    # one training step through the trainer (it builds the network from the preset's arch)
    trainer = Trainer(config, str(tmp_path / "run"), device="cpu", stream=io.StringIO())
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    parts = trainer.train_step(iter([_batch(config.crop_size, config.num_classes)]))
    assert trainer.iteration == 1 and np.isfinite(parts["loss"])
    after = trainer.state_dict()
    assert not torch.equal(before["backbone.stem.0.weight"], after["backbone.stem.0.weight"])
    checkpoint = trainer.save()
    assert checkpoint is not None

    # export to a model file: it names the new arch and the preset's classes
    model_file = str(tmp_path / "tiny.rspmodel")
    export_model(checkpoint, model_file)
    info = read_model_info(model_file)
    assert info.arch == extra_arch and info.class_names == POTSDAM_CLASSES[: config.num_classes]

    # segment a real GeoTIFF through it (5 cm pixels: the preset's GSD, no resampling)
    raster = make_raster("in.tif", potsdam_pixels(150, 200), pixel=(0.05, 0.05))
    out = str(tmp_path / "labels.tif")
    result = predict(PredictRequest(model=model_file, input=raster, output=out, threads=2))
    labels = read(out)
    assert labels.shape == (150, 200) and labels.max() < config.num_classes
    assert result.windows >= 1 and [c["name"] for c in result.classes] == list(info.class_names)

    # the model file needs the registration: without it, loading names the unknown arch
    ARCHS.pop(extra_arch)
    with pytest.raises(ModelFileError, match=extra_arch):
        load_model_file(model_file)
