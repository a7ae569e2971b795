"""Where fine-tuning starts from a model file: which weights carry over (training.finetune.start)."""

from __future__ import annotations

import torch

from engine.model_file import ModelInfo, read_state_dict, save_model_file
from engine.models import build_segmentor
from training.finetune.start import build_start

START_CLASSES = ("building", "tree", "road")


def start_file(tmp_path) -> str:
    torch.manual_seed(3)
    model = build_segmentor("lite_resnet", len(START_CLASSES), aux_head=False)
    info = ModelInfo(arch="lite_resnet", num_classes=3, class_names=START_CLASSES, colors=((0, 0, 0),) * 3, gsd_m=0.5,
                     tile_size=64, stride=48, dataset="test", description="seeded random weights")  # fmt: skip
    path = str(tmp_path / "start.rspmodel")
    save_model_file(path, model.state_dict(), info)
    return path


def test_other_classes_keep_the_decoder_and_the_rows_of_classes_with_the_same_name(tmp_path) -> None:
    path = start_file(tmp_path)
    saved = read_state_dict(path)
    torch.manual_seed(99)  # the fresh rows come from this seed, not from the file
    start = build_start(4, ("road", "water", "building", "grass"), init=path)
    state = start.model.state_dict()
    assert not start.head_kept
    for key in saved:
        if key.startswith(("backbone.", "decode_head.")) and not key.startswith("decode_head.conv_seg."):
            torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0)
    for new_row, old_row in ((0, 2), (2, 0)):  # road, building
        for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias"):
            torch.testing.assert_close(state[key][new_row], saved[key][old_row], rtol=0, atol=0)
    for new_row in (1, 3):  # water, grass: no such class in the start model
        assert not any(torch.equal(state["decode_head.conv_seg.weight"][new_row], row)
                       for row in saved["decode_head.conv_seg.weight"])  # fmt: skip


def test_the_same_classes_keep_the_whole_decode_head(tmp_path) -> None:
    path = start_file(tmp_path)
    saved = read_state_dict(path)
    start = build_start(3, START_CLASSES, init=path)
    assert start.head_kept
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias"):
        torch.testing.assert_close(start.model.state_dict()[key], saved[key], rtol=0, atol=0)


def test_a_catch_all_class_keeps_its_row_only_within_the_same_class_scheme(tmp_path) -> None:
    """*background* means "none of the other classes": its row carries over when every new class is known to the
    start model, and starts fresh when the new list brings classes of its own."""
    torch.manual_seed(3)
    names = ("background", "building", "road")
    model = build_segmentor("lite_resnet", 3, aux_head=False)
    info = ModelInfo(arch="lite_resnet", num_classes=3, class_names=names, colors=((0, 0, 0),) * 3, gsd_m=0.5,
                     tile_size=64, stride=48, dataset="test", description="seeded random weights")  # fmt: skip
    path = str(tmp_path / "bg.rspmodel")
    save_model_file(path, model.state_dict(), info)
    saved = read_state_dict(path)["decode_head.conv_seg.weight"]

    torch.manual_seed(99)
    subset = build_start(2, ("road", "background"), init=path).model.state_dict()["decode_head.conv_seg.weight"]
    torch.testing.assert_close(subset[1], saved[0], rtol=0, atol=0)  # background kept: same scheme
    torch.testing.assert_close(subset[0], saved[2], rtol=0, atol=0)

    other = build_start(3, ("background", "building", "plants"), init=path).model.state_dict()
    rows = other["decode_head.conv_seg.weight"]
    torch.testing.assert_close(rows[1], saved[1], rtol=0, atol=0)  # building still carries over
    assert not any(torch.equal(rows[0], row) for row in saved)  # plants is new to the start: background starts fresh
