"""``--compile``: when the engine compiles the network, the fall-back to eager, and (slow) compiled == eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engine import inference
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
            predict(PredictRequest(model=model_path, input=raster, output=str(tmp_path / f"{mode}.tif"), compile=mode))
    assert "compiling the network" in caplog.text and "torch.compile failed" not in caplog.text
    eager, compiled = read(str(tmp_path / "off.tif")), read(str(tmp_path / "on.tif"))
    assert np.unique(eager).size > 1
    assert (eager == compiled).mean() > 0.999
