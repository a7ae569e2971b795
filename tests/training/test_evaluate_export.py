"""`test --show-dir` and `export` end to end on the real Potsdam patch (needs the engine's inference and models)."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import make_segmentor
from training.__main__ import main
from training.config import get_preset
from training.trainer import Trainer

pytest.importorskip("engine.inference", reason="engine.inference.slide_inference not in this checkout yet")
pytest.importorskip("engine.models", reason="engine.models not in this checkout yet")


def test_train_test_show_dir_and_export(potsdam_root, tmp_path) -> None:
    cfg = dataclasses.replace(get_preset("cpu_tiny_potsdam"), data_root=str(potsdam_root))
    work = tmp_path / "run"
    Trainer(cfg, str(work), device="cpu", model=make_segmentor(cfg.arch, 5), stream=io.StringIO()).run()
    ckpt = str(work / "latest.pth")
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(cfg.to_json())
    show, out = tmp_path / "show", tmp_path / "eval"
    assert main(["test", str(cfg_json), ckpt, "--show-dir", str(show), "--out-dir", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] > 35.0  # chance over 5 classes is far lower; the patch was seen 100 times
    assert metrics["per_class"][5]["IoU"] is None  # clutter: ignored, NaN
    overlay = np.asarray(Image.open(show / "2_10_0_0_512_512.png"))
    assert overlay.shape[1] == 3 * 512 and (out / "confusion_matrix.png").is_file()
    model_path = str(tmp_path / "m.rspmodel")
    assert main(["export", ckpt, "--output", model_path, "--metrics", str(out / "metrics.json")]) == 0
    from engine.model_file import read_model_info

    info = read_model_info(model_path)
    assert (
        info.num_classes == 5
        and info.class_names[0] == "impervious_surface"
        and info.metrics["mIoU"] == metrics["mIoU"]
    )
    assert info.provenance["sha256"] and info.tile_size == 128 and os.path.getsize(model_path) > 1000


def test_one_checkpoint_error_for_engine_and_training(tmp_path) -> None:
    """training.checkpoint re-exports the engine's CheckpointError: engine callers catch it as a ModelError, the
    training CLI as a RuntimeError, whichever package raised it."""
    from engine.models import CheckpointError, ModelError, read_checkpoint
    from training.checkpoint import CheckpointError as TrainingCheckpointError
    from training.checkpoint import load_checkpoint

    assert TrainingCheckpointError is CheckpointError
    missing = str(tmp_path / "missing.pth")
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(ModelError, match="not found"):
            load(missing)
        with pytest.raises(RuntimeError, match="not found"):
            load(missing)
