"""Augmentation pieces against mmseg's rules, and the command line (presets, show, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from training.__main__ import main
from training.transforms import TrainPipeline, pad_to, random_crop_box, rescale_size

REPO = os.path.join(os.path.dirname(__file__), "..", "..")


def test_keep_ratio_rescale_sizes() -> None:
    assert rescale_size(512, 512, (768, 768)) == (768, 768)
    assert rescale_size(1464, 824, (896, 896)) == (896, 504)  # long side limited: 824 * 896/1464 = 504.3
    assert rescale_size(512, 512, (256, 256)) == (256, 256)


def test_cat_max_ratio_redraws_dominated_crops() -> None:
    label = np.zeros((100, 100), np.uint8)
    label[:, 90:] = 1  # only crops touching the right edge hold two classes
    boxes = [random_crop_box(label, 20, 0.75, np.random.default_rng(s)) for s in range(40)]
    mixed = [b for b in boxes if b[3] > 95]  # >= 5 of 20 columns of class 1 -> dominant share < 0.75
    plain = [random_crop_box(label, 20, 1.0, np.random.default_rng(s)) for s in range(40)]
    assert len(mixed) > sum(b[3] > 95 for b in plain)


def test_pad_values_and_pipeline_shapes() -> None:
    img, lab = pad_to(np.ones((3, 4, 3), np.float32), np.zeros((3, 4), np.uint8), 6, 5)
    assert img.shape == (6, 6, 3) and img[5, 5].tolist() == [0, 0, 0] and lab[5, 5] == 5 and lab[0, 0] == 0
    pipe = TrainPipeline(64, 64, (0.5, 2.0), 0.75, 0.5, True, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), 5)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (80, 100), dtype=np.uint8)
    out_i, out_l = pipe(image, label, np.random.default_rng(1))
    again_i, _ = pipe(image, label, np.random.default_rng(1))
    assert out_i.shape == (64, 64, 3) and out_i.dtype == np.float32 and out_l.shape == (64, 64)
    np.testing.assert_array_equal(out_i, again_i)  # same seed, same augmentation
    assert set(np.unique(out_l)) <= {0, 1, 2, 3, 4, 5}


def test_cli_show_and_unknown_preset(capsys) -> None:
    assert main(["show", "upernet_rsp_r50_potsdam", "--set", "max_iters=10"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_iters"] == 10 and shown["optimizer"] == "sgd" and shown["num_classes"] == 5
    assert main(["show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'nope'" in err and "upernet_rsp_vitaev2_s_isaid" in err and "cpu_tiny_potsdam" in err


def test_cli_converter_names_missing_input(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training", "convert-isaid", str(tmp_path), "--output", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "train" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["upernet_rsp_swin_t_isaid", "demo_lite_potsdam"])
def test_presets_round_trip_through_json(name: str, tmp_path) -> None:
    from training.config import get_preset, load_config

    path = tmp_path / "c.json"
    path.write_text(get_preset(name).to_json())
    assert load_config(str(path)) == get_preset(name)


def test_repeated_set_options_all_apply(capsys) -> None:
    args = ["show", "demo_lite_potsdam", "--set", "max_iters=60", "--set", "val_interval=30", "log_interval=5"]
    assert main(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["max_iters"], shown["val_interval"], shown["log_interval"]) == (60, 30, 5)
