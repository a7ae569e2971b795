"""bench.guided_labelling's own parts: random squares never overlap, the oracle copies the reference, the table."""

from __future__ import annotations

import json

import numpy as np

from bench.finetune_quality import IGNORE, SPARSE_SIDE
from bench.guided_labelling import add_squares, main, random_squares, seed_noise, table


def test_random_squares_stay_inside_and_overlap_nothing_taken() -> None:
    taken = np.zeros((200, 300), bool)
    taken[:SPARSE_SIDE, :SPARSE_SIDE] = True  # a square labelled before
    squares = random_squares(taken, 12, np.random.default_rng(0))
    assert len(squares) == 12
    seen = np.zeros_like(taken, np.int32)
    seen[:SPARSE_SIDE, :SPARSE_SIDE] = 1
    for r, c in squares:
        assert 0 <= r <= 200 - SPARSE_SIDE and 0 <= c <= 300 - SPARSE_SIDE
        seen[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE] += 1
    assert seen.max() == 1
    assert taken.sum() == 13 * SPARSE_SIDE**2


def test_oracle_copies_the_reference_inside_the_squares_only() -> None:
    mask = np.arange(100 * 100, dtype=np.int64).reshape(100, 100).astype(np.uint8) % 5
    labels = np.full(mask.shape, IGNORE, np.uint8)
    add_squares(labels, mask, [(10, 20)])
    inside = (slice(10, 10 + SPARSE_SIDE), slice(20, 20 + SPARSE_SIDE))
    assert (labels[inside] == mask[inside]).all()
    assert (labels < IGNORE).sum() == SPARSE_SIDE**2


def test_table_averages_seeds_then_scenes() -> None:
    rows = [
        {"scene": "loveda0", "seed": 0, "round": 0, "strategy": "start", "labelled_px": 100, "mIoU": 10.0},
        {"scene": "loveda0", "seed": 0, "round": 1, "strategy": "guided", "labelled_px": 200, "mIoU": 20.0},
        {"scene": "loveda0", "seed": 0, "round": 1, "strategy": "random", "labelled_px": 190, "mIoU": 14.0},
        {"scene": "loveda0", "seed": 1, "round": 0, "strategy": "start", "labelled_px": 100, "mIoU": 12.0},
        {"scene": "loveda0", "seed": 1, "round": 1, "strategy": "guided", "labelled_px": 200, "mIoU": 16.0},
        {"scene": "loveda0", "seed": 1, "round": 1, "strategy": "random", "labelled_px": 210, "mIoU": 18.0},
        {"scene": "potsdam", "seed": 0, "round": 0, "strategy": "start", "labelled_px": 50, "mIoU": 30.0},
        {"scene": "potsdam", "seed": 0, "round": 1, "strategy": "guided", "error": "boom"},
        {"scene": "potsdam", "seed": 0, "round": 1, "strategy": "random", "labelled_px": 80, "mIoU": 31.0},
    ]
    text, means = table(rows)
    assert "| loveda0 | 1 | 1 | 200 / 210 | 16.0 | 18.0 | -2.0 |" in text
    assert "| potsdam | 0 | 1 | - / 80 | boom | 31.0 | - |" in text
    # round 1: loveda0 only (potsdam's guided run failed): guided 18, random 16 over its two seeds
    assert means["1"]["scenes"] == 1
    assert (means["1"]["guided"], means["1"]["random"], means["1"]["worst_scene_delta"]) == (18.0, 16.0, 2.0)
    # seed noise, by hand: loveda0's deltas +6 and -2 spread by 4 either side of +2, one degree of freedom, so the
    # pooled variance is 32 and the standard error of the two-seed mean sqrt(32 / 2) = 4; one run of two ahead
    assert (means["1"]["delta_se"], means["1"]["ahead"], means["1"]["runs"]) == (4.0, 1, 2)
    assert "| 1 | 1 | 200 / 200 | 18.0 | 16.0 | +2.0 | 4.0 | 1 of 2 | +2.0 |" in text
    # round 0: both scenes, the start is shared: guided = random = mean(11, 30)
    assert means["0"]["guided"] == means["0"]["random"] == 20.5


def test_seed_noise_pools_the_spread_of_scenes_run_at_several_seeds() -> None:
    deltas = [np.array([6.0, -2.0]), np.array([1.0, 3.0, 5.0]), np.array([10.0])]
    # by hand: squares about each scene's mean 32 + 8 + 0 over 1 + 2 + 0 degrees of freedom = 40 / 3;
    # the mean over 3 scenes of means over 2, 3 and 1 seeds: sqrt(40 / 3 * (1/2 + 1/3 + 1)) / 3 = 1.648
    assert seed_noise(deltas) == {"delta_se": 1.65, "ahead": 5, "runs": 6}
    assert seed_noise([np.array([4.0]), np.array([-1.0])]) == {"delta_se": None, "ahead": 1, "runs": 2}


def test_test_area_classes_leave_out_a_class_the_test_area_lacks() -> None:
    # two classes in the test area (0, 1); guided also predicts class 2, absent there: mmseg's mean counts it as 0
    row = {"scene": "dubai", "seed": 0, "labelled_px": 100}
    rows = [
        {**row, "round": 0, "strategy": "start", "mIoU": 30.0, "iou": [40.0, 20.0, None]},
        {**row, "round": 1, "strategy": "guided", "mIoU": 40.0, "iou": [70.0, 50.0, 0.0]},
        {**row, "round": 1, "strategy": "random", "mIoU": 50.0, "iou": [60.0, 40.0, None]},
    ]
    text, means = table(rows, {"dubai": [0, 1]})
    # mmseg: 40 - 50 = -10; over classes 0 and 1 only: mean(70, 50) - mean(60, 40) = +10
    assert means["1"]["guided"] - means["1"]["random"] == -10.0
    assert means["1"]["delta_test_classes"] == 10.0
    assert text.splitlines()[-1].endswith("| -10.0 | +10.0 |")
    assert "delta_test_classes" not in table(rows)[1]["1"]


def test_from_json_merges_runs_without_running_anything(tmp_path) -> None:
    runs = []
    for seed, (g, r) in enumerate(((30.0, 20.0), (20.0, 26.0))):
        base = {"scene": "loveda0", "seed": seed, "labelled_px": 100}
        rows = [
            {**base, "round": 0, "strategy": "start", "mIoU": 10.0, "iou": [10.0] * 7},
            {**base, "round": 1, "strategy": "guided", "mIoU": g, "iou": [g] * 7},
            {**base, "round": 1, "strategy": "random", "mIoU": r, "iou": [r] * 7},
        ]
        runs.append(tmp_path / f"run{seed}.json")
        runs[-1].write_text(json.dumps({"cpu": f"cpu {seed}", "rows": rows}))
    assert main(["--from-json", *map(str, runs), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "guided_labelling.json").read_text())
    assert merged["cpu"] == "cpu 0; cpu 1"
    # seeds +10 and -6: the mean +2, spread 8 either side, one degree of freedom: SE sqrt(128 / 2) = 8
    last = merged["summary"]["means"]["1"]
    assert (last["guided"] - last["random"], last["delta_se"], last["ahead"]) == (2.0, 8.0, 1)
    assert (tmp_path / "merged" / "guided_labelling.png").stat().st_size > 0
