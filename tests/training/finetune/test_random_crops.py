"""The random crops the recipes train on, on the real Potsdam sample: deterministic per seed, never a held-out
label, every class reached."""

from __future__ import annotations

import numpy as np
import torch
from finetune_support import LABELS_TIF, RASTER

from training.finetune import split as sp
from training.finetune.chips import CropPlan, RandomCropDataset
from training.finetune.classes import IGNORE, build_table
from training.finetune.labels import LabelSource

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _dataset(tmp_path, class_power=0.5):
    from training.finetune.prepare import prepare_data

    labels = LabelSource(LABELS_TIF)
    table = build_table(labels.values())
    data = prepare_data([(RASTER, LABELS_TIF)], None, table, [labels], ("red", "green", "blue"), (0.0, 255.0),
                        None, None, 128, sp.block_size(128), 0.2, 0, str(tmp_path), lambda: None)  # fmt: skip
    plan = CropPlan(128, (0.75, 1.5), class_power)
    return RandomCropDataset(data.sources, data.splits, plan, MEAN, STD, True), data, table


def test_same_seed_same_crop_and_other_seeds_differ(tmp_path):
    ds, _, _ = _dataset(tmp_path)
    a, b, c = ds[(0, 7)], ds[(5, 7)], ds[(0, 8)]  # the index does not matter, the seed does
    assert a[0].shape == (3, 128, 128) and a[1].shape == (128, 128) and a[1].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_crops_never_carry_a_held_out_label_and_reach_every_class(tmp_path):
    ds, data, table = _dataset(tmp_path)
    held = np.zeros((data.sources[0].height, data.sources[0].width), bool)
    for h in data.splits[0].holdout_blocks:
        held[h.row : h.row_end, h.col : h.col_end] = True
    assert held.any()
    reference = data.sources[0].read_labels(data.sources[0].bounds)
    centred = np.zeros(table.num_classes, int)
    crossing = 0
    for seed in range(200):
        i, win = ds.window(np.random.default_rng(seed))
        lab = ds._labels(i, win)
        part = held[win.row : win.row_end, win.col : win.col_end]
        assert (lab[part] == IGNORE).all()  # blanked where held out
        assert (lab[~part] == reference[win.row : win.row_end, win.col : win.col_end][~part]).all()  # kept elsewhere
        crossing += int(part.any())
        centred += np.bincount(lab[lab != IGNORE], minlength=table.num_classes) > 0
    assert crossing > 0  # crops do reach over held-out blocks (their imagery, not their labels)
    assert (centred > 0).all()  # every class, car included (3 % of the pixels), is drawn
