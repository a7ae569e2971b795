"""The training loop on the real Potsdam patch: it learns, resumes identically, and DDP equals one process."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket

import torch
import torch.multiprocessing as mp

from tests.training.conftest import make_segmentor
from training.config import get_preset
from training.trainer import Trainer


def _config(root, **kw):
    return dataclasses.replace(get_preset("cpu_tiny_potsdam"), data_root=str(root), **kw)


# SGD for the DDP comparison: its update is linear in the gradient, so float round-off between the all-reduced and
# the single-process batch statistics stays round-off (Adam's m/sqrt(v) amplifies it on near-zero gradients).
_SGD = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, no_decay_keys=(), lr_power=0.9, min_lr=1e-4, warmup_iters=0)


def test_cpu_preset_overfits_the_potsdam_patch(potsdam_root, tmp_path) -> None:
    cfg = _config(potsdam_root)
    work = tmp_path / "run"
    result = Trainer(
        cfg, str(work), device="cpu", model=make_segmentor(cfg.arch, cfg.num_classes), stream=io.StringIO()
    ).run()
    assert result["iter"] == cfg.max_iters
    logged = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in logged] == list(range(cfg.log_interval, cfg.max_iters + 1, cfg.log_interval))
    first, last = logged[0]["loss"], logged[-1]["loss"]  # means over the first and last 10 iterations
    assert last < 0.6 * first, (first, last)
    assert (work / "latest.pth").is_file() and (work / f"iter_{cfg.max_iters}.pth").is_file()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(work / "tf_logs"))


def test_resume_continues_identically(potsdam_root, tmp_path) -> None:
    cfg = _config(potsdam_root, max_iters=4, checkpoint_interval=2, log_interval=1)
    quiet = io.StringIO()
    full = Trainer(cfg, str(tmp_path / "a"), device="cpu", model=make_segmentor(cfg.arch, 5), stream=quiet)
    full.run()
    first = Trainer(cfg, str(tmp_path / "b"), device="cpu", model=make_segmentor(cfg.arch, 5), stream=quiet)
    first.run(stop_at=2)  # "interrupted" after the iteration-2 checkpoint
    resumed = Trainer(cfg, str(tmp_path / "b"), device="cpu", model=make_segmentor(cfg.arch, 5, seed=123), stream=quiet)
    resumed.run(resume=True)
    assert resumed.iteration == 4
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # And the interrupted run alone is not the same (the comparison can fail).
    assert not all(torch.equal(a[k], v) for k, v in first.state_dict().items() if v.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, root: str, work: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    cfg = _config(root, samples_per_gpu=1, batch_size=2, max_iters=2, checkpoint_interval=2, **_SGD)
    trainer = Trainer(cfg, work, device="cpu", model=make_segmentor(cfg.arch, 5, dropout=False), stream=io.StringIO())
    trainer.run()
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_step_equals_single_process(potsdam_root, tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(potsdam_root), str(tmp_path / "ddp")), nprocs=2, join=True)
    cfg = _config(potsdam_root, samples_per_gpu=2, batch_size=2, max_iters=2, checkpoint_interval=2, **_SGD)
    single = Trainer(
        cfg, str(tmp_path / "one"), device="cpu", model=make_segmentor(cfg.arch, 5, dropout=False), stream=io.StringIO()
    )
    single.run()
    ddp = torch.load(tmp_path / "ddp" / "latest.pth", weights_only=True)["state_dict"]
    one = single.state_dict()
    init = make_segmentor(cfg.arch, 5).state_dict()
    assert ddp.keys() == one.keys()
    # Equal up to float round-off. UperNet's PPM pools to 1×1 and normalises over the batch (2 values per channel
    # here), which amplifies reduction-order round-off, so each tensor's difference is bounded relative to how far
    # the two steps moved it: a wrong gradient average or unsynchronised BatchNorm moves tensors by tens of per cent.
    moved = 0
    for k, v in one.items():
        if not v.is_floating_point():
            assert torch.equal(ddp[k], v), k
            continue
        update = (v - init[k]).abs().max().item()
        diff = (ddp[k] - v).abs().max().item()
        assert diff <= 0.02 * update + 1e-6, (k, diff, update)
        moved += int(update > 0)
    assert moved > 0  # the step changed the weights, so equality is meaningful
