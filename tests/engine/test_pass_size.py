"""Windows per forward pass: no padded pass when a nearby size divides the windows, and a resumed run still passes as
many windows per forward as the run it continues (bit-identical outputs)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import STRIDE, TILE, potsdam_pixels, read

import engine.inference as inference
from engine.errors import CancelledError
from engine.predict import PredictRequest, predict
from engine.tiling import pass_size


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_pass_size_computes_the_fewest_windows_within_its_range(batch) -> None:
    for n in range(1, 300):
        size = pass_size(n, batch)
        computed = -(-n // size) * size
        assert computed <= -(-n // batch) * batch  # never more than the asked batch size computes
        if batch == 1:
            assert size == 1
        elif n <= batch + batch // 2:
            assert size == n  # one pass, no padding
        else:
            assert max(2, batch - 1) <= size <= batch + batch // 2
            assert all(-(-n // s) * s >= computed for s in range(max(2, batch - 1), batch + batch // 2 + 1))
    assert (pass_size(25, 4), pass_size(28, 4), pass_size(144, 4)) == (5, 4, 4)


class Passes(list):
    """The number of windows of every forward pass (the real network runs; only the count is recorded); sets
    ``cancel`` once ``cancel_after`` passes have run."""

    cancel_after = 0
    cancel = threading.Event()


@pytest.fixture
def passes(monkeypatch) -> Passes:
    seen = Passes()
    real = inference.run_windows

    def counting(net, batch, device, precision):  # type: ignore[no-untyped-def]
        seen.append(len(batch))
        if seen.cancel_after and len(seen) >= seen.cancel_after:
            seen.cancel.set()
        return real(net, batch, device, precision)

    monkeypatch.setattr(inference, "run_windows", counting)
    return seen


def test_a_resumed_run_uses_the_whole_runs_pass_size_and_gives_identical_outputs(
    model_path, make_raster, tmp_path, passes
) -> None:
    rows, cols = 11, 5  # 55 windows: passes of 5 compute 55, passes of 4 would compute 56
    raster = make_raster("in.tif", potsdam_pixels(TILE + STRIDE * (rows - 1), TILE + STRIDE * (cols - 1)))

    def request(name: str, resume: bool = False) -> PredictRequest:
        return PredictRequest(model=model_path, input=raster, output=str(tmp_path / f"{name}.tif"),
                              confidence=str(tmp_path / f"{name}_conf.tif"), batch_size=4, compile="off",
                              precision="fp32", resume=resume)  # fmt: skip

    predict(request("whole"))
    assert passes == [5] * 11
    passes.clear()
    passes.cancel_after = 8  # 40 windows: rows 0-384 finished, a chunk of at least 256 rows is durable
    with pytest.raises(CancelledError):
        predict(request("cut"), cancel=passes.cancel)
    passes.clear()
    passes.cancel_after = 0
    resumed = predict(request("cut", resume=True))
    assert 0 < resumed.windows < 55 and set(passes) == {5}  # fewer windows, the same pass size
    for a, b in (("whole", "cut"), ("whole_conf", "cut_conf")):
        np.testing.assert_array_equal(read(str(tmp_path / f"{a}.tif")), read(str(tmp_path / f"{b}.tif")))
