"""``python -m training finetune --resume`` after a kill -9 during a checkpoint write gives the uninterrupted model.

Deterministic kill points (``RSP_ENGINE_KILL_AT``, :mod:`engine.faults`): the run is first stopped with SIGTERM (it
writes a checkpoint of its last finished iteration), then resumed with a kill just before a write of its next
checkpoint (``checkpoint_write``: the iteration file or the ``latest.pth`` copy; ``rename``: after the file was
written, before it got its name), then resumed to the end. The model must equal, tensor for tensor, the model of a
run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from finetune_support import DEMO_MODEL, RASTER, ROOT

from engine.model_file import read_state_dict

ENV = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
ITERS = 8


def args(tmp_path, labels, name):
    return [sys.executable, "-m", "training", "finetune", "--raster", RASTER, "--labels", labels, "--class-field",
            "class", "--output", str(tmp_path / f"{name}.rspmodel"), "--init", DEMO_MODEL, "--iters", str(ITERS),
            "--tile", "128", "--batch-size", "2", "--device", "cpu",
            "--work-dir", str(tmp_path / f"{name}_work")]  # fmt: skip


def run(cmd, kill_at=None):
    env = {**ENV, **({"RSP_ENGINE_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def stop_with_sigterm_after(cmd, iteration):
    """Run ``cmd`` and SIGTERM it once it reports ``iteration`` (it checkpoints its last finished iteration)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "progress" and event.get("iteration", 0) >= iteration:
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=300)
    return proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, potsdam_polygons):
    """The model of a run that was never interrupted."""
    folder = tmp_path_factory.mktemp("whole")
    whole = run(args(folder, potsdam_polygons, "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    return read_state_dict(str(folder / "whole.rspmodel"))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # four fine-tuning processes per case
@pytest.mark.parametrize("kill_at", ["checkpoint_write:1", "rename:1", "checkpoint_write:2"])
def test_kill_during_a_checkpoint_write_then_resume_gives_the_uninterrupted_model(
    tmp_path, potsdam_polygons, uninterrupted, kill_at
):
    cmd = args(tmp_path, potsdam_polygons, "split")
    assert stop_with_sigterm_after(cmd, 3) == 130
    work = tmp_path / "split_work"
    assert (work / "latest.pth").is_file()
    killed = run([*cmd, "--resume"], kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "split.rspmodel").exists()
    resumed = run([*cmd, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = uninterrupted, read_state_dict(str(tmp_path / "split.rspmodel"))
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)
