"""The plugin's engine runner in one long QGIS session (pytest-qgis, headless): a killed engine, a cancel while the
model loads, and many consecutive runs without the QGIS process's memory growing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import CLASS_NAMES, real_pixels, write_raster

from qgis_plugin.engine_runner import EngineRunner, run_blocking

COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 0))
MEMORY_BOUND_MIB = 25.0  # growth allowed between the 3rd and the last run (Python's allocator settles by then)


def _args(model: Path, raster: Path, out: Path) -> tuple[list[str], list[str]]:
    labels, vector = out / "classes.tif", out / "polygons.gpkg"
    args = ["predict", "--model", str(model), "--input", str(raster), "--output", str(labels)]
    return [*args, "--vector", str(vector), "--threads", "1", "--overwrite"], [str(labels), str(vector)]


def _wait(qgis_app, condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end and not condition():
        qgis_app.processEvents()
        time.sleep(0.02)
    return condition()


def _runner(qgis_app, model: Path, raster: Path, out: Path) -> tuple[EngineRunner, dict, list[str]]:  # type: ignore[no-untyped-def]
    args, outputs = _args(model, raster, out)
    runner = EngineRunner(sys.executable, args, outputs)
    seen: dict = {"progress": 0}
    runner.progress.connect(lambda _e: seen.__setitem__("progress", seen["progress"] + 1))
    runner.failed.connect(lambda message, hint: seen.setdefault("failed", (message, hint)))
    runner.canceled.connect(lambda: seen.setdefault("canceled", True))
    runner.finished_ok.connect(lambda event: seen.setdefault("done", event))
    return runner, seen, outputs


def test_engine_killed_mid_run_reports_and_leaves_only_the_resumable_part(
    qgis_app, tmp_path: Path, model: Path, monkeypatch
) -> None:
    """Nothing under the requested names; the engine's hidden journal and chunks stay for Resume (the lock
    file of the killed engine and the chunk it was writing are removed). The engine holds before listing its
    second chunk (:data:`engine.faults.HOLD_ENV`), so the kill always lands mid-run, however fast the machine."""
    from engine.faults import HOLD_ENV
    from engine.journal import Journal, journal_path, unfinished_run

    monkeypatch.setenv(HOLD_ENV, "journal_write:3")

    raster = write_raster(tmp_path / "big.tif", np.tile(real_pixels(256, 256), (1, 3, 3)))
    out = tmp_path / "out"
    out.mkdir()
    runner, seen, outputs = _runner(qgis_app, model, raster, out)
    runner.start()
    labels = str(out / "classes.tif")
    assert _wait(qgis_app, lambda: unfinished_run(labels) is not None or "done" in seen, 120), seen
    os.kill(runner.process.processId(), 9)  # as the OOM killer would
    assert _wait(qgis_app, lambda: "failed" in seen, 60), seen
    message, _hint = seen["failed"]
    assert message.strip()
    assert "done" not in seen
    assert not any(os.path.exists(p) for p in outputs)
    resumable = {os.path.basename(p) for p in (journal_path(labels), *Journal.load(journal_path(labels)).files)}
    assert set(os.listdir(out)) == resumable  # journal and its chunks; no lock file, no other temporary
    assert unfinished_run(labels) is not None


def test_cancel_while_the_model_loads(qgis_app, tmp_path: Path, model: Path) -> None:
    raster = write_raster(tmp_path / "in.tif", real_pixels(200, 200))
    out = tmp_path / "out"
    out.mkdir()
    runner, seen, outputs = _runner(qgis_app, model, raster, out)
    runner.start()
    assert _wait(qgis_app, lambda: runner.is_running(), 30)
    runner.cancel()  # before any progress: the engine is still importing torch / loading the model
    assert _wait(qgis_app, lambda: not runner.is_running(), 60)
    assert _wait(qgis_app, lambda: "canceled" in seen or "failed" in seen, 10), seen
    assert seen["progress"] == 0 and "done" not in seen
    assert not any(os.path.exists(p) for p in outputs) and os.listdir(out) == []


def test_cancel_while_writing_keeps_the_previous_output(qgis_app, tmp_path: Path, model: Path) -> None:
    """Cancel once the engine has its temporary output open; an earlier result under the same name survives intact."""
    raster = write_raster(tmp_path / "big.tif", np.tile(real_pixels(256, 256), (1, 3, 3)))
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "classes.tif"
    previous.write_bytes(b"an earlier result")
    runner, seen, _outputs = _runner(qgis_app, model, raster, out)
    runner.start()
    assert _wait(qgis_app, lambda: any(n.startswith(".classes.tmp-") for n in os.listdir(out)), 120), seen
    runner.cancel()
    assert _wait(qgis_app, lambda: "canceled" in seen, 60), seen
    assert "done" not in seen and "failed" not in seen
    assert previous.read_bytes() == b"an earlier result"
    assert sorted(os.listdir(out)) == ["classes.tif"]


def _consecutive_runs(qgis_app, tmp_path: Path, model: Path, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Run, load the styled results into the project, then remove them, as an analyst trying settings would."""
    from qgis.core import QgsProject

    from qgis_plugin.layer_styling import add_results_to_project

    raster = write_raster(tmp_path / "small.tif", real_pixels(96, 96))
    project = QgsProject.instance()
    me = psutil.Process()
    rss = []
    for i in range(runs):
        out = tmp_path / f"run{i}"
        out.mkdir()
        args, outputs = _args(model, raster, out)
        done = run_blocking(sys.executable, args, lambda _e: None, lambda: False, outputs)
        assert done is not None
        group = add_results_to_project(
            {"raster": outputs[0], "vector": outputs[1]}, CLASS_NAMES, COLORS, "small", "lite", project
        )
        assert len(group.findLayers()) == 2
        project.removeMapLayers([child.layerId() for child in group.findLayers()])
        project.layerTreeRoot().removeChildNode(group)
        qgis_app.processEvents()
        rss.append(me.memory_info().rss / 2**20)
    assert not project.mapLayers()
    return rss


def test_consecutive_runs_do_not_grow_memory(qgis_app, tmp_path: Path, model: Path) -> None:
    rss = _consecutive_runs(qgis_app, tmp_path, model, 8)
    assert rss[-1] - rss[2] < MEMORY_BOUND_MIB, rss


@pytest.mark.slow
def test_fifty_consecutive_runs_do_not_grow_memory(qgis_app, tmp_path: Path, model: Path) -> None:
    rss = _consecutive_runs(qgis_app, tmp_path, model, 50)
    print(f"RSS MiB after runs 3, 10, 25, 50: {rss[2]:.1f} {rss[9]:.1f} {rss[24]:.1f} {rss[49]:.1f}")
    assert rss[-1] - rss[2] < MEMORY_BOUND_MIB, rss


def test_two_runs_at_once_same_output_refused_other_output_succeeds(qgis_app, tmp_path: Path, model: Path) -> None:
    """Two dialogs (or a dialog and Processing) at once: the second on the same output is refused at once with a
    message and leaves the first run's files alone; one on another output runs alongside and succeeds."""
    raster = write_raster(tmp_path / "big.tif", np.tile(real_pixels(256, 256), (1, 3, 3)))
    out, other = tmp_path / "out", tmp_path / "other"
    out.mkdir()
    other.mkdir()
    first, first_seen, outputs = _runner(qgis_app, model, raster, out)
    first.start()
    assert _wait(qgis_app, lambda: first_seen["progress"] > 0, 120), first_seen
    # Hold the first engine (and its lock) still while the others start: on a loaded machine an engine can take
    # longer to start than the first run needs to finish.
    first_pid = int(first.process.processId())
    os.kill(first_pid, signal.SIGSTOP)
    try:
        second, second_seen, _ = _runner(qgis_app, model, raster, out)
        third, third_seen, third_outputs = _runner(qgis_app, model, raster, other)
        second.start()
        third.start()
        assert _wait(qgis_app, lambda: "failed" in second_seen, 60), second_seen
    finally:
        os.kill(first_pid, signal.SIGCONT)
    message, hint = second_seen["failed"]
    assert "another run is writing" in message and "wait" in hint
    assert first.is_running(), "the refusal came after the first run had finished"
    assert _wait(qgis_app, lambda: "done" in first_seen and "done" in third_seen, 300), (first_seen, third_seen)
    assert all(os.path.exists(p) for p in outputs + third_outputs)
    assert sorted(os.listdir(out)) == ["classes.tif", "classes.tif.aux.xml", "polygons.gpkg"]
