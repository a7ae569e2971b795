"""``--precision``: what ``auto`` picks (mocked CPU flags), fp32 unchanged, bf16 agreement on a trained network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine import precision
from engine.errors import ParameterError
from engine.predict import PredictRequest, predict
from tests.engine.conftest import read

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_MODEL = os.path.join(ROOT, "resources", "models", "demo_lite_potsdam.rspmodel")
SAMPLE = os.path.join(ROOT, "resources", "samples", "potsdam_2_10_rgb.tif")


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU flags ``engine.precision`` sees: ``cpu({"avx512_bf16"})``."""

    def set_flags(flags: set[str]) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        precision.cpu_has_native_bf16.cache_clear()

    yield set_flags
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("flags", "native"),
    [({"avx2", "avx512f"}, False), ({"avx2", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True), (set(), None)],
)
def test_native_bf16_comes_from_the_cpu_flags(cpu, flags, native) -> None:
    cpu(flags)
    if native is None:  # no /proc/cpuinfo: torch's own probes decide, and must give a bool
        assert isinstance(precision.cpu_has_native_bf16(), bool)
    else:
        assert precision.cpu_has_native_bf16() is native
        assert precision.device_has_native_bf16("cpu") is native


def test_auto_picks_bf16_only_on_native_cpus_for_measured_archs(cpu) -> None:
    resolve = precision.resolve_precision
    cpu({"avx2", "avx512f"})  # AVX2/AVX-512 without BF16: oneDNN would emulate it
    assert resolve("auto", "cpu", 0.999) == "fp32"
    cpu({"avx512_bf16"})
    assert resolve("auto", "cpu", 0.999) == "bf16"
    assert resolve("auto", "cpu", 0.99) == "fp32"  # below the 99.5 % agreement bar
    assert resolve("auto", "cpu", None) == "fp32"  # never measured
    assert resolve("auto", "cpu", 0.999, exact=True) == "fp32"
    assert resolve("auto", "cpu", 0.999, blend="reference") == "fp32"
    assert resolve("bf16", "cpu", None, exact=True) == "bf16"  # explicit wins
    assert resolve("fp32", "cpu", 0.999) == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve("half", "cpu", 0.999)


def test_bad_precision_is_a_parameter_error(model_path, tmp_path) -> None:
    with pytest.raises(ParameterError, match="--precision"):
        PredictRequest(model=model_path, input="in.tif", output=str(tmp_path / "o.tif"), precision="fp16")


def test_the_start_event_names_the_precision(model_path, make_raster, tmp_path, cpu) -> None:
    from tests.engine.conftest import potsdam_pixels

    raster = make_raster("in.tif", potsdam_pixels(64, 64))
    seen = []
    cpu({"avx512_bf16"})
    auto = {"precision": "auto"}
    requests = ({"precision": "bf16"}, {**auto, "exact": True}, {**auto, "blend": "reference"})
    for req in requests:
        events = []
        predict(PredictRequest(model=model_path, input=raster, output=str(tmp_path / "o.tif"), overwrite=True, **req),
                on_event=events.append)  # fmt: skip
        seen.append(events[0]["precision"])
    assert seen == ["bf16", "fp32", "fp32"]


def test_bf16_labels_agree_with_fp32_on_a_trained_network(tmp_path) -> None:
    """The bundled demo model (trained by ``make demo-model``) on the real sample it was trained near: ≥ 99.5 %."""
    labels = {}
    for name in ("fp32", "bf16"):
        out = str(tmp_path / f"{name}.tif")
        predict(PredictRequest(model=DEMO_MODEL, input=SAMPLE, output=out, precision=name, compile="off"))
        labels[name] = read(out)
    assert np.unique(labels["fp32"]).size >= 3  # a real segmentation, not one class everywhere
    agreement = (labels["fp32"] == labels["bf16"]).mean()
    assert agreement >= 0.995, agreement
    assert agreement < 1.0  # bf16 really ran: some near-ties flip (else this test would not test bf16)


def test_cli_takes_precision(tmp_path) -> None:
    out = tmp_path / "o.tif"
    cmd = [sys.executable, "-m", "engine", "predict", "--model", DEMO_MODEL, "--input", SAMPLE, "--output", str(out),
           "--window", "0,0,256,256", "--precision", "fp32"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = json.loads(proc.stdout.splitlines()[0])
    assert start["event"] == "start" and start["precision"] == "fp32" and out.exists()
    bad = subprocess.run([*cmd[:-1], "fp16"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 1 and "fp16" in bad.stdout
