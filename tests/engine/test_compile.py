"""``--compile``: when the engine compiles the network (measured saving vs compile cost), the fall-back to eager,
cancelling while it compiles, and (slow) compiled == eager and ``engine warmup``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from engine import compile_plan, inference
from engine.errors import ParameterError
from engine.inference import COMPILE_AUTO_MIN_WINDOWS, CompiledBatches, compile_for_run
from engine.models import build_segmentor
from engine.predict import PredictRequest, predict
from tests.engine.conftest import potsdam_pixels, read


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmentor("lite_resnet", 3, aux_head=False).eval()


def test_modes_decide_when_to_compile(net, monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)  # the decision only, not the compiler
    assert compile_for_run(net, "off", 10**6, 4) is net
    assert compile_for_run(net, "auto", COMPILE_AUTO_MIN_WINDOWS - 1, 4) is net
    has_cxx = inference.cpp_compiler() is not None
    assert isinstance(compile_for_run(net, "auto", COMPILE_AUTO_MIN_WINDOWS, 4), CompiledBatches) == has_cxx
    assert isinstance(compile_for_run(net, "on", 1, 4), CompiledBatches) == has_cxx
    with pytest.raises(ValueError, match="auto, on, off"):
        compile_for_run(net, "fast", 1, 4)


def test_on_without_a_compiler_says_what_to_install(net, monkeypatch, make_raster, model_path, tmp_path) -> None:
    monkeypatch.setattr(inference, "cpp_compiler", lambda: None)
    with pytest.raises(ValueError, match="apt install g"):
        compile_for_run(net, "on", 1, 4)
    assert compile_for_run(net, "auto", 10**6, 4) is net  # auto quietly stays eager
    raster = make_raster("in.tif", potsdam_pixels(64, 64))
    out = tmp_path / "out.tif"
    with pytest.raises(ParameterError, match="C\\+\\+ compiler"):
        predict(PredictRequest(model=model_path, input=raster, output=str(out), compile="on"))
    assert not out.exists()
    with pytest.raises(ParameterError, match="--compile"):
        PredictRequest(model=model_path, input=raster, output=str(out), compile="yes")


def test_compiler_failure_falls_back_to_eager_once(net, monkeypatch, caplog) -> None:
    calls = []

    def broken(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        raise RuntimeError("inductor: no compiler\nlong details")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: broken)
    runner = CompiledBatches(net, batch_size=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        first, second, partial = runner(x), runner(x), runner(x[:1])
        expected = net(x)
    assert calls == [2]  # tried once, then eager for good; other batch shapes never go to the compiled module
    assert torch.equal(first, expected) and torch.equal(second, expected) and partial.shape[0] == 1
    assert "torch.compile failed (inductor: no compiler)" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(inference.cpp_compiler() is None, reason="torch.compile needs a C++ compiler")
def test_compiled_run_equals_eager_run(model_path, make_raster, tmp_path, caplog) -> None:
    """A real inductor compilation of the demo-sized network (≈ 20-40 s cold): same labels as eager."""
    raster = make_raster("in.tif", potsdam_pixels(160, 200))
    with caplog.at_level(logging.INFO, logger="engine.inference"):
        for mode in ("off", "on"):
            out = str(tmp_path / f"{mode}.tif")  # fp32: compiled vs eager rounding is under test, not bf16's
            predict(PredictRequest(model=model_path, input=raster, output=out, compile=mode, precision="fp32"))
    assert "compiling the network" in caplog.text and "torch.compile failed" not in caplog.text
    eager, compiled = read(str(tmp_path / "off.tif")), read(str(tmp_path / "on.tif"))
    assert np.unique(eager).size > 1
    assert (eager == compiled).mean() > 0.999


def test_auto_weighs_the_expected_saving_against_the_compile_cost() -> None:
    decide = compile_plan.decide
    assert not decide(255, None).compile and decide(256, None).compile  # nothing measured: the old 256-window rule
    measured = {"eager_s": 1.3, "compiled_s": 0.8}  # 0.5 s saved per window
    assert not decide(25, measured).compile  # cold cache: 12.5 s saving < 90 s compile
    assert decide(300, measured).compile
    warm = {**measured, "cold_compile_s": 70.0}  # a compile finished once: the cache is warm
    decision = decide(25, warm)
    assert decision.compile and decision.warm and decision.expected_cost_s == compile_plan.WARM_COMPILE_S
    assert not decide(25, {**warm, "warm_compile_s": 15.0}).compile  # 12.5 s saving < 15 s measured warm cost
    assert decide(25, {"compiled_s": 1.2, "warm_compile_s": 6.0}).compile  # eager unknown: 25 % of eager assumed
    assert "25 windows" in decision.reason and "warm" in decision.reason


def test_measurements_are_recorded_in_the_compiler_cache_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    key = compile_plan.graph_key("lite_resnet", 3, 64, 4, "bf16", False, "cpu")
    assert "lite_resnet" in key and "bf16" in key and "b4" in key and torch.__version__ in key
    compile_plan.record(key, eager_s=0.5)
    compile_plan.record(key, eager_s=0.7, compiled_s=0.3, cold_compile_s=60.0)  # per-window times keep the best
    compile_plan.record(key, warm_compile_s=None)  # nothing measured: nothing written
    with open(tmp_path / "cache" / compile_plan.REGISTRY_NAME) as f:
        assert json.load(f) == {key: {"eager_s": 0.5, "compiled_s": 0.3, "cold_compile_s": 60.0}}
    (tmp_path / "cache" / compile_plan.REGISTRY_NAME).write_text("not json")
    assert compile_plan.read_registry() == {}  # a damaged file never fails a run


def test_a_warm_cache_makes_a_small_run_compile(net, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)  # the decision only, not the compiler
    monkeypatch.setattr(inference, "cpp_compiler", lambda: "/usr/bin/g++")
    key = compile_plan.graph_key("lite_resnet", 3, 64, 2, "fp32", False, "cpu")
    compile_plan.record(key, eager_s=1.0, compiled_s=0.5)
    cold = inference.WindowRunner(net, torch.device("cpu"), "fp32", "auto", 25, 2, key)
    assert not cold.compiling  # 25 × 0.5 s = 12.5 s < a cold compile (90 s)
    compile_plan.record(key, cold_compile_s=80.0)
    warm = inference.WindowRunner(net, torch.device("cpu"), "fp32", "auto", 25, 2, key)
    assert warm.compiling and warm.decision.warm  # 12.5 s > a warm compile (10 s)
    assert not inference.WindowRunner(net, torch.device("cpu"), "fp32", "auto", 15, 2, key).compiling  # 7.5 s


def test_a_run_records_its_eager_time_per_window(net, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    key = compile_plan.graph_key("lite_resnet", 3, 64, 2, "fp32", False, "cpu")
    runner = inference.WindowRunner(net, torch.device("cpu"), "fp32", "off", 6, 2, key)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    t = time.perf_counter()
    for _ in range(3):
        out = runner(x)
    elapsed = time.perf_counter() - t
    assert out.shape == (2, 3, 64, 64) and out.dtype == np.float32
    runner(x[:1])  # a partial batch is not a full batch's time
    runner.record()
    eager = compile_plan.read_registry()[key]["eager_s"]
    assert 0 < eager <= elapsed / 6 + 1e-3


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.skipif(inference.cpp_compiler() is None or shutil.which("pgrep") is None, reason="needs g++ and pgrep")
def test_sigterm_while_compiling_with_a_cold_cache_ends_within_2_s(model_path, make_raster, tmp_path) -> None:
    """A real first compilation (cold cache folder) is under way when SIGTERM comes: exit 130 within 2 s, no outputs,
    no compiler process left behind."""
    raster = make_raster("in.tif", potsdam_pixels(96, 96))
    out = tmp_path / "out.tif"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cold-cache")}
    cmd = [sys.executable, "-m", "engine", "predict", "--model", model_path, "--input", raster, "--output", str(out),
           "--compile", "on"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "status" and "compiling" in line:
            break
    else:
        pytest.fail(f"no compiling status; exit {proc.wait()}")
    time.sleep(1.0)  # well into the compilation (it takes 30 s or more cold)
    children = _children_of(proc.pid)
    assert children, "the cold compilation runs in a child process"
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    code = proc.wait(timeout=30)
    took = time.monotonic() - t
    assert code == 130 and took < 2.0, (code, took)
    assert '"cancelled"' in rest
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]
    time.sleep(0.2)
    assert not [c for c in children if os.path.exists(f"/proc/{c}") and "zombie" not in _state(c)]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line for line in f if line.startswith("State")), "").lower()
    except OSError:
        return "zombie"


@pytest.mark.slow
@pytest.mark.skipif(inference.cpp_compiler() is None, reason="torch.compile needs a C++ compiler")
def test_warmup_makes_auto_compile_a_small_raster(model_path, make_raster, tmp_path) -> None:
    """``engine warmup`` (a real compilation) measures and records; a 16-window run with ``auto`` then compiles from
    the warm cache and gives the eager run's labels."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "engine", "warmup", "--model", model_path, "--batch-size", "2", "--precision", "fp32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["event"] == "done" and done["cache"] == "cold" and done["compiled_s"] > 0 and done["eager_s"] > 0
    # The lite test network gains too little per window to pay for a compile on 16 windows: record what an RSP
    # network measures (the decision under test is the engine's reading of the file, not this network's speed).
    registry = tmp_path / "cache" / "rsp_compile_measurements.json"
    entry = json.loads(registry.read_text())[done["key"]]
    registry.write_text(json.dumps({done["key"]: {**entry, "eager_s": 1.3, "compiled_s": 0.5, "warm_compile_s": 5}}))
    raster = make_raster("in.tif", potsdam_pixels(208, 208))  # 16 windows of 64/48
    labels, statuses = {}, {}
    for mode in ("auto", "off"):  # auto first: the eager run records the lite network's real (tiny) eager time
        out = tmp_path / f"{mode}.tif"
        run = [sys.executable, "-m", "engine", "predict", "--model", model_path, "--input", raster, "--output",
               str(out), "--batch-size", "2", "--precision", "fp32", "--compile", mode]  # fmt: skip
        proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        statuses[mode] = [e["message"] for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "status"]
        labels[mode] = read(str(out))
    assert not statuses["off"] and len(statuses["auto"]) == 1
    assert "compiler cache" in statuses["auto"][0] and "warm cache" in statuses["auto"][0]
    assert (labels["off"] == labels["auto"]).mean() > 0.999
