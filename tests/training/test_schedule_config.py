"""LR schedule values against the spec formulas, the paramwise weight-decay rule, and the presets/overrides."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from training.config import ConfigError, apply_overrides, get_preset
from training.schedule import build_optimizer, lr_at, no_decay_names


@pytest.mark.parametrize(
    ("it", "expected"),
    [
        (0, 6e-5 * 1e-6),  # warm-up start: regular(0) * warmup_ratio
        (750, 6e-5 * (1 - 750 / 80000) * (1 - 0.5 * (1 - 1e-6))),
        (1499, 6e-5 * (1 - 1499 / 80000) * (1 - (1 / 1500) * (1 - 1e-6))),
        (1500, 6e-5 * (1 - 1500 / 80000)),  # warm-up over
        (40000, 3e-5),
        (79999, 6e-5 / 80000),
    ],
)
def test_adamw_poly_warmup(it: int, expected: float) -> None:
    assert lr_at(it, get_preset("upernet_rsp_swin_t_potsdam")) == pytest.approx(expected, rel=1e-9)


def test_sgd_poly_power_09_min_lr() -> None:
    cfg = get_preset("upernet_rsp_r50_potsdam")
    assert lr_at(0, cfg) == pytest.approx(0.01)
    assert lr_at(40000, cfg) == pytest.approx(0.0099 * 0.5**0.9 + 1e-4)
    assert lr_at(80000, cfg) == pytest.approx(1e-4)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"patch_embed": nn.ModuleDict({"norm": nn.LayerNorm(4)}), "fc": nn.Linear(4, 4)})
        self.backbone.relative_position_bias_table = nn.Parameter(torch.zeros(3, 1))
        self.decode_head = nn.ModuleDict({"bn": nn.BatchNorm2d(4), "norm0": nn.LayerNorm(4)})


def test_paramwise_substring_rule() -> None:
    model = _Toy()
    names = set(no_decay_names(model, get_preset("upernet_rsp_swin_t_potsdam").no_decay_keys))
    assert names == {
        "backbone.patch_embed.norm.weight",
        "backbone.patch_embed.norm.bias",
        "backbone.relative_position_bias_table",
        "decode_head.norm0.weight",
        "decode_head.norm0.bias",
    }
    opt = build_optimizer(model, get_preset("upernet_rsp_swin_t_potsdam"))
    assert isinstance(opt, torch.optim.AdamW)
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[1]["weight_decay"] == 0.0
    assert id(model.decode_head["bn"].weight) in decay and id(model.backbone["fc"].bias) in decay  # BN, biases decay
    sgd = build_optimizer(model, get_preset("upernet_rsp_r50_potsdam"))
    assert (
        isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1 and sgd.param_groups[0]["weight_decay"] == 5e-4
    )


def test_presets_match_the_seed_table() -> None:
    r50, swin_i, vit_i = (
        get_preset(n) for n in ("upernet_rsp_r50_isaid", "upernet_rsp_swin_t_isaid", "upernet_rsp_vitaev2_s_isaid")
    )
    assert (r50.num_classes, r50.ignore_index, r50.crop_size, r50.samples_per_gpu, r50.flip_test) == (
        16,
        255,
        896,
        4,
        True,
    )
    assert vit_i.samples_per_gpu == 2 and swin_i.lr == 6e-5 and swin_i.warmup_iters == 1500
    pots = get_preset("upernet_rsp_vitaev2_s_potsdam")
    assert (pots.num_classes, pots.ignore_index, pots.seg_pad_val, pots.cat_max_ratio) == (5, 5, 5, 0.75)
    assert (pots.test_tile, pots.test_stride, pots.batch_size, pots.aux_weight) == (512, 384, 8, 0.4)


def test_unknown_preset_lists_valid_names_and_overrides_parse() -> None:
    with pytest.raises(ConfigError, match="upernet_rsp_swin_t_potsdam"):
        get_preset("upernet_swin")
    cfg = apply_overrides(
        get_preset("cpu_tiny_potsdam"), ["max_iters=7", "mean=1,2,3", "amp=false", "ratio_range=none"]
    )
    assert (cfg.max_iters, cfg.mean, cfg.amp, cfg.ratio_range) == (7, (1.0, 2.0, 3.0), False, None)
    with pytest.raises(ConfigError, match="valid keys"):
        apply_overrides(cfg, ["max_iter=3"])
    with pytest.raises(ConfigError, match="samples_per_gpu"):
        dataclasses.replace(cfg, batch_size=3)
