"""End to end: fine-tune the demo network on polygons over the real Potsdam sample (tiny schedules, CPU)."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from finetune_support import DEMO_MODEL, RASTER, label_array
from osgeo import gdal

from engine.errors import CancelledError
from engine.model_file import read_model_info, read_state_dict
from engine.predict import PredictRequest, predict
from training.finetune.run import FinetuneRequest, finetune
from training.metrics import ConfusionMatrix, summarize

TINY = dict(iters=4, tile=128, batch_size=2, device="cpu")


def _request(tmp_path, labels, name="mine", **kw):
    return FinetuneRequest(
        rasters=(RASTER,),
        labels=(labels,),
        class_field="class",
        output=str(tmp_path / f"{name}.rspmodel"),
        init=DEMO_MODEL,
        work_dir=str(tmp_path / f"{name}_work"),
        **{**TINY, **kw},
    )


def test_finetune_writes_a_model_whose_holdout_metrics_the_engine_reproduces(tmp_path, potsdam_polygons):
    events: list[dict] = []
    # --no-refit: the written model is the one the hold-out measured
    result = finetune(_request(tmp_path, potsdam_polygons, refit=False), on_event=events.append)
    names = [e["event"] for e in events]
    assert names.count("start") == 1 and names[-1] == "done" and names.count("progress") == TINY["iters"]
    assert events[-1]["model"] == result.model and set(events[-1]["metrics"]) == {"OA", "kappa", "mIoU", "mF1"}

    info = read_model_info(result.model)
    demo = read_model_info(DEMO_MODEL)
    assert info.class_names == demo.class_names and info.colors == demo.colors  # same classes: its order kept
    assert info.gsd_m == pytest.approx(0.05) and info.bands == demo.bands and info.tile_size == 128
    assert set(info.metrics) == {"OA", "kappa", "mIoU", "mF1"}
    assert info.provenance["tool"] == "python -m training finetune" and info.provenance["holdout"]["per_class"]
    work = tmp_path / "mine_work"
    assert (work / "latest.pth").is_file() and (work / "confusion_matrix.png").is_file()
    report = json.loads((work / "report.json").read_text())
    for key in ("OA", "kappa", "mIoU", "mF1", "per_class", "confusion_matrix", "holdout_windows"):
        assert key in report
    assert report["refit"] is False and report["model_training_pixels"] == report["training_pixels"]

    # Independently: segment the whole raster with the written model through the engine, and score the held-out
    # windows against the label raster. The engine's grid is anchored to the raster, so the labels there are the
    # ones the hold-out evaluation saw.
    out = str(tmp_path / "whole.tif")
    predict(PredictRequest(model=result.model, input=RASTER, output=out, compile="off"))
    ds = gdal.Open(out)
    pred = ds.GetRasterBand(1).ReadAsArray()
    ref = label_array()
    matrix = ConfusionMatrix(5, 255)
    held = np.zeros(ref.shape, bool)
    for w in report["holdout_windows"]:
        held[w["yoff"] : w["yoff"] + w["ysize"], w["xoff"] : w["xoff"] + w["xsize"]] = True
    keep = held & (ref != 255)
    matrix.update(pred[keep], ref[keep])
    again = summarize(matrix.counts, info.class_names)
    assert report["holdout_pixels"] == int(keep.sum())
    assert report["OA"] == again["OA"] and report["mIoU"] == again["mIoU"] and report["kappa"] == again["kappa"]
    assert info.metrics["OA"] == again["OA"]


def test_refit_trains_again_on_every_label_and_writes_that_model(tmp_path, potsdam_polygons, monkeypatch):
    from training.finetune.chips import RandomCropDataset

    blocks: list[int] = []  # training blocks of each dataset built: phase 1, then the refit
    original = RandomCropDataset.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        blocks.append(len(self.blocks))

    monkeypatch.setattr(RandomCropDataset, "__init__", recording)
    events: list[dict] = []
    refit = finetune(_request(tmp_path, potsdam_polygons, "refit"), on_event=events.append)
    measured = finetune(_request(tmp_path, potsdam_polygons, "measured", refit=False))

    n = TINY["iters"]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["done"] for e in progress] == list(range(1, 2 * n + 1)) and {e["total"] for e in progress} == {2 * n}
    assert [e["iteration"] for e in progress] == [*range(1, n + 1), *range(1, n + 1)]
    report = json.loads((tmp_path / "refit_work" / "report.json").read_text())
    held = len(report["holdout_windows"])
    assert held > 0 and blocks[0] + held == blocks[1] == blocks[2] + held  # the refit trains on the held-out too
    assert report["refit"] is True and report["model_training_pixels"] > report["training_pixels"]
    assert events[-1]["event"] == "done" and events[-1]["refit"] is True
    assert (tmp_path / "refit_work" / "refit" / "latest.pth").is_file()
    # the same first training (same seed), so the same hold-out figures; a different written model
    assert refit.metrics["confusion_matrix"] == measured.metrics["confusion_matrix"]
    a, b = read_state_dict(refit.model), read_state_dict(measured.model)
    assert any(not bool((a[k] == b[k]).all()) for k in a)
    assert "trained again" in read_model_info(refit.model).description


@pytest.fixture
def two_micro_batches(monkeypatch):
    """Batches of 4 chips in two forwards of 2 (gradient accumulation), so a cancel can land mid-step."""
    from training.finetune import training

    monkeypatch.setattr(training, "CPU_SAMPLES_PER_STEP", 2)


@pytest.mark.parametrize("where", ["between steps", "between micro-batches", "in the refit"])
def test_cancel_then_resume_is_bit_identical(tmp_path, potsdam_polygons, two_micro_batches, monkeypatch, where):
    from training.finetune.chips import RandomCropDataset as ChipDataset  # what the recipes train on

    whole = finetune(_request(tmp_path, potsdam_polygons, "whole", iters=6, batch_size=4))
    cancel = threading.Event()
    reads = {"n": 0}
    original = ChipDataset.__getitem__

    def counting(self, item):
        reads["n"] += 1
        if where == "between micro-batches" and reads["n"] == 15:  # step 4's second forward: its first one is done
            cancel.set()
        return original(self, item)

    monkeypatch.setattr(ChipDataset, "__getitem__", counting)

    def on_event(e):
        if e["event"] == "progress" and e["done"] == (9 if where == "in the refit" else 3):
            cancel.set()  # "between micro-batches" is cancelled by the read count above first

    request = _request(tmp_path, potsdam_polygons, "split", iters=6, batch_size=4)
    with pytest.raises(CancelledError):
        finetune(request, on_event=on_event, cancel=cancel)
    assert not os.path.exists(request.output)  # nothing under the requested name
    # the last finished iteration, whatever the moment
    phase = tmp_path / "split_work" / ("refit" if where == "in the refit" else "")
    assert (phase / "iter_3.pth").is_file()
    monkeypatch.setattr(ChipDataset, "__getitem__", original)
    events: list[dict] = []
    resumed = finetune(FinetuneRequest(**{**request.__dict__, "resume": True}), on_event=events.append)
    done = [e["done"] for e in events if e["event"] == "progress"]
    assert done == (list(range(10, 13)) if where == "in the refit" else list(range(4, 13)))
    a, b = read_state_dict(whole.model), read_state_dict(resumed.model)
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_resume_with_other_options_is_refused(tmp_path, potsdam_polygons):
    from engine.errors import ParameterError

    request = _request(tmp_path, potsdam_polygons, "r", iters=1)
    finetune(request)
    with pytest.raises(ParameterError, match="other iters"):
        finetune(FinetuneRequest(**{**request.__dict__, "resume": True, "iters": 2, "overwrite": True}))


def test_freeze_backbone_keeps_backbone_weights(tmp_path, potsdam_polygons):
    result = finetune(_request(tmp_path, potsdam_polygons, "frozen", iters=2, freeze_backbone=True))
    before, after = read_state_dict(DEMO_MODEL), read_state_dict(result.model)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(bool((before[k] == after[k]).all()) for k in backbone)
    assert any(not bool((before[k] == after[k]).all()) for k in before if k.startswith("decode_head."))


def test_gsd_option_trains_and_records_a_coarser_grid(tmp_path, potsdam_polygons):
    events: list[dict] = []
    result = finetune(_request(tmp_path, potsdam_polygons, "gsd", iters=2, gsd=0.1, tile=64), on_event=events.append)
    info = read_model_info(result.model)
    assert info.gsd_m == pytest.approx(0.1)
    assert (tmp_path / "gsd_work" / "raster0.vrt").is_file()  # read through a warped VRT, like the engine
    assert gdal.Open(str(tmp_path / "gsd_work" / "labels0.tif")).RasterXSize <= 257  # labels on the 10 cm grid
    start = next(e for e in events if e["event"] == "start")
    assert start["gsd_m"] == pytest.approx(0.1) and start["holdout_blocks"] >= 1
    started = []
    predict(PredictRequest(model=result.model, input=RASTER, output=str(tmp_path / "p.tif"), compile="off"),
            on_event=started.append)  # fmt: skip
    assert started[0]["resampled"] is True  # the engine reads at the model's GSD too


def test_several_rasters_share_one_labels_file(tmp_path, potsdam_polygons):
    left, right = str(tmp_path / "left.tif"), str(tmp_path / "right.tif")
    gdal.Translate(left, RASTER, srcWin=[0, 0, 256, 512])
    gdal.Translate(right, RASTER, srcWin=[256, 0, 256, 512])
    events: list[dict] = []
    request = FinetuneRequest(
        **{**_request(tmp_path, potsdam_polygons, "two", iters=2).__dict__, "rasters": (left, right)}
    )
    result = finetune(request, on_event=events.append)
    report = json.loads((tmp_path / "two_work" / "report.json").read_text())
    assert {w["raster"] for w in report["holdout_windows"]} <= {0, 1}
    assert (tmp_path / "two_work" / "labels1.tif").is_file() and os.path.isfile(result.model)
    assert report["holdout_pixels"] > 0


def test_backbone_checkpoint_start_and_a_mismatched_arch(tmp_path, potsdam_polygons):
    import torch

    from engine.errors import ParameterError
    from engine.models import build_backbone

    ckpt = str(tmp_path / "lite-ckpt.pth")
    torch.save({"model": build_backbone("lite_resnet").state_dict()}, ckpt)
    base = {**_request(tmp_path, potsdam_polygons, "bb", iters=1).__dict__, "init": None, "backbone": ckpt}
    result = finetune(FinetuneRequest(**{**base, "arch": "lite_resnet"}))
    info = read_model_info(result.model)
    assert info.arch == "lite_resnet" and info.provenance["start"] == "lite-ckpt.pth"
    with pytest.raises(ParameterError, match="does not fit --arch rsp_swin_t"):
        finetune(FinetuneRequest(**{**base, "arch": "rsp_swin_t", "output": str(tmp_path / "x.rspmodel")}))


@pytest.mark.slow  # ≈ 20-60 s each on 2 cores: run by `make reliability`
@pytest.mark.parametrize("arch", ["rsp_resnet50", "rsp_swin_t", "rsp_vitaev2_s"])
def test_rsp_networks_finetune_on_cpu(tmp_path, potsdam_polygons, arch):
    events: list[dict] = []
    request = FinetuneRequest(
        **{**_request(tmp_path, potsdam_polygons, arch, iters=1, tile=64).__dict__, "init": None, "arch": arch}
    )
    result = finetune(request, on_event=events.append)
    assert read_model_info(result.model).arch == arch
    assert any("from scratch" in e.get("message", "") for e in events if e["event"] == "status")


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_finetune_on_cuda_with_amp(tmp_path, potsdam_polygons):
    events: list[dict] = []
    request = _request(tmp_path, potsdam_polygons, "cuda", iters=3, device="cuda")
    result = finetune(request, on_event=events.append)
    assert any("on cuda" in e.get("message", "") for e in events if e["event"] == "status")
    assert read_model_info(result.model).metrics
