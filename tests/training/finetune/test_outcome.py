"""The honest outcome of a run: warnings when the model collapsed, and for classes smaller than one chip."""

from __future__ import annotations

import numpy as np
import torch
from finetune_support import DEMO_MODEL, RASTER

from training.finetune.outcome import majority_baseline, outcome_warnings, small_class_warnings
from training.finetune.run import FinetuneRequest, finetune

NAMES = ("road", "water", "forest")


def test_a_collapsed_confusion_matrix_names_the_classes_never_predicted():
    counts = np.array([[0, 0, 50], [0, 0, 30], [0, 0, 900]])  # everything predicted as forest
    warnings = outcome_warnings(counts, np.array([100, 80, 5000]), NAMES, miou=30.0, iterations=300)
    assert len(warnings) == 2
    assert "never predicts road, water (2 of the 3 classes" in warnings[0] and "--iters 600" in warnings[0]
    assert "always answering forest" in warnings[1]
    base = majority_baseline(counts, np.array([100, 80, 5000]), NAMES)
    assert base["class"] == "forest" and base["OA"] == 91.84 and base["mIoU"] == 30.61  # 900/980; IoU 0, 0, 91.84


def test_a_model_that_learned_gets_no_warning():
    counts = np.array([[40, 5, 5], [3, 25, 2], [50, 20, 830]])
    assert outcome_warnings(counts, np.array([100, 80, 5000]), NAMES, miou=60.0, iterations=300) == []


def test_small_classes_are_named_with_their_pixel_count():
    (w,) = small_class_warnings(np.array([70000, 4000, 0]), NAMES, 256)
    assert "class water has only 4000 labelled training pixels" in w and "256×256" in w


def test_a_run_that_collapses_ends_with_a_warning_and_still_writes_its_model(tmp_path, potsdam_polygons, monkeypatch):
    from training.finetune.training import FinetuneTrainer

    original = FinetuneTrainer.state_dict

    def collapsed(self):  # a decode head that answers its first class everywhere: what a collapse looks like
        state = original(self)
        state["decode_head.conv_seg.weight"] = torch.zeros_like(state["decode_head.conv_seg.weight"])
        bias = torch.full_like(state["decode_head.conv_seg.bias"], -10.0)
        bias[0] = 10.0
        state["decode_head.conv_seg.bias"] = bias
        return state

    monkeypatch.setattr(FinetuneTrainer, "state_dict", collapsed)
    events: list[dict] = []
    request = FinetuneRequest(
        rasters=(RASTER,), labels=(potsdam_polygons,), class_field="class", output=str(tmp_path / "m.rspmodel"),
        init=DEMO_MODEL, work_dir=str(tmp_path / "work"), iters=2, tile=128, batch_size=2, device="cpu",
    )  # fmt: skip
    result = finetune(request, on_event=events.append)
    assert (tmp_path / "m.rspmodel").is_file() and result.metrics["per_class"]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and kinds[-2] == "warning"  # the last word before done
    warned = [e["message"] for e in events if e["event"] == "warning"]
    first = events[-1]["per_class"][0]["class"]
    others = [r["class"] for r in events[-1]["per_class"][1:]]
    never = next(w for w in warned if "never predicts" in w)
    assert all(name in never for name in others) and first not in never.split("never predicts")[1].split("(")[0]
    assert events[-1]["warnings"] == result.metrics["warnings"] and never in events[-1]["warnings"]
    # the Potsdam sample's cars (7841 pixels, fewer in training) fit in less than one 128² chip
    assert any(w.startswith("class car has only") for w in warned)
