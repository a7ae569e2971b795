"""The QProcess runner on real subprocesses: progress, malformed lines, errors, crashes, cancel with clean-up."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest
from plugin_test_support import wait_until

from qgis_plugin.engine_runner import EngineRunError, EngineRunner, run_blocking
from qgis_plugin.progress_stream import ProgressEvent

PRINTS_PROGRESS_AND_DONE = textwrap.dedent(
    """
    import json, sys
    out = sys.argv[sys.argv.index("--output") + 1]
    for k in range(1, 4):
        print(json.dumps({"event": "progress", "done": k, "total": 3, "eta_s": 3 - k}), flush=True)
    print("this is not json", flush=True)
    print('{"event": "start", "total": 3}', flush=True)
    print('{"event": "progress", "done": 1}', flush=True)
    open(out, "w").write("x")
    sys.stdout.write(json.dumps({"event": "done", "outputs": {"raster": out}, "classes": []}))  # no newline
    """
)


def _collect(runner: EngineRunner) -> dict:
    seen: dict = {"progress": [], "malformed": []}
    runner.progress.connect(seen["progress"].append)
    runner.malformed.connect(seen["malformed"].append)
    runner.finished_ok.connect(lambda e: seen.setdefault("done", e))
    runner.failed.connect(lambda m, h: seen.setdefault("failed", (m, h)))
    runner.canceled.connect(lambda: seen.setdefault("canceled", True))
    return seen


def test_progress_done_and_malformed_lines(qgis_app, fake_engine, tmp_path) -> None:
    module = fake_engine(PRINTS_PROGRESS_AND_DONE)
    out = tmp_path / "out.tif"
    runner = EngineRunner(sys.executable, ["predict", "--output", str(out)], [str(out)], module=module)
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: not runner.is_running() and ("done" in seen or "failed" in seen), 30)
    assert [(p.done, p.total) for p in seen["progress"]] == [(1, 3), (2, 3), (3, 3)]
    assert seen["malformed"] == ["this is not json", '{"event": "progress", "done": 1}']
    assert seen["done"].outputs == {"raster": str(out)}
    assert out.exists()


def test_error_event_and_partial_output_removed(qgis_app, fake_engine, tmp_path) -> None:
    module = fake_engine(
        "import json, sys\nopen(sys.argv[2], 'w').write('partial')\n"
        "print(json.dumps({'event': 'error', 'message': 'CUDA out of memory', 'hint': 'use a smaller batch'}))\n"
        "sys.exit(2)\n"
    )
    out = tmp_path / "out.tif"
    runner = EngineRunner(sys.executable, ["--output", str(out)], [str(out)], module=module)
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: "failed" in seen, 30)
    assert seen["failed"] == ("CUDA out of memory", "use a smaller batch")
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import os\nos.abort()\n", "crashed"),
        (
            "import sys\nprint('Traceback: KeyError', file=sys.stderr)\nsys.exit(3)\n",
            "exit code 3: Traceback: KeyError",
        ),
        ('print(\'{"event":"progress","done":1,"total":2}\')\n', "exit code 0"),  # ends without 'done'
    ],
)
def test_crash_or_exit_without_error_event(qgis_app, fake_engine, body, expected) -> None:
    runner = EngineRunner(sys.executable, [], module=fake_engine(body))
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: "failed" in seen, 30)
    message, hint = seen["failed"]
    assert expected in message
    assert "QGIS is unaffected" in hint


def test_missing_interpreter_fails_clearly(qgis_app, tmp_path) -> None:
    runner = EngineRunner(str(tmp_path / "no-such-python"), ["predict"])
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: "failed" in seen, 10)
    assert "Could not start the engine interpreter" in seen["failed"][0]


SLOW_WRITER = textwrap.dedent(
    """
    import json, sys, time
    out = sys.argv[sys.argv.index("--output") + 1]
    open(out, "w").write("partial")
    for k in range(1000):
        print(json.dumps({"event": "progress", "done": k, "total": 1000}), flush=True)
        time.sleep(0.05)
    """
)


def test_cancel_terminates_and_removes_new_outputs(qgis_app, fake_engine, tmp_path) -> None:
    out = tmp_path / "out.tif"
    kept = tmp_path / "existing.gpkg"
    kept.write_text("a file the user had before the run")
    runner = EngineRunner(
        sys.executable, ["--output", str(out)], [str(out), str(kept)], module=fake_engine(SLOW_WRITER)
    )
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: len(seen["progress"]) >= 2, 30)
    assert out.exists()
    started = time.monotonic()
    runner.cancel()
    assert wait_until(lambda: "canceled" in seen, 15)
    assert time.monotonic() - started < 5  # SIGTERM ended it; no wait for the kill
    assert not out.exists()
    assert kept.exists()


def test_cancel_kills_a_process_that_ignores_sigterm(qgis_app, fake_engine, tmp_path, monkeypatch) -> None:
    import qgis_plugin.engine_runner as engine_runner

    monkeypatch.setattr(engine_runner, "KILL_GRACE_MS", 500)
    body = "import signal, time, json\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + (
        "print(json.dumps({'event': 'progress', 'done': 0, 'total': 1}), flush=True)\ntime.sleep(60)\n"
    )
    runner = EngineRunner(sys.executable, [], module=fake_engine(body))
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: len(seen["progress"]) >= 1, 30)
    runner.cancel()
    assert wait_until(lambda: "canceled" in seen, 10)


def test_run_blocking_returns_done_and_reports_progress(qgis_app, fake_engine, tmp_path) -> None:
    out = tmp_path / "out.tif"
    progress: list[ProgressEvent] = []
    done = run_blocking(
        sys.executable,
        ["--output", str(out)],
        progress.append,
        lambda: False,
        [str(out)],
        module=fake_engine(PRINTS_PROGRESS_AND_DONE),
    )
    assert done.outputs["raster"] == str(out)
    assert [p.done for p in progress] == [1, 2, 3]


def test_run_blocking_cancel(qgis_app, fake_engine, tmp_path) -> None:
    out = tmp_path / "out.tif"
    progress: list[ProgressEvent] = []
    with pytest.raises(EngineRunError) as info:
        run_blocking(
            sys.executable,
            ["--output", str(out)],
            progress.append,
            lambda: len(progress) >= 2,
            [str(out)],
            module=fake_engine(SLOW_WRITER),
        )
    assert info.value.canceled
    assert not out.exists()


def test_status_event_reaches_the_status_signal(qgis_app, fake_engine, tmp_path) -> None:
    module = fake_engine(
        "import json\n"
        "print(json.dumps({'event': 'status', 'message': 'compiling the network'}), flush=True)\n"
        "print(json.dumps({'event': 'done', 'outputs': {}, 'classes': []}), flush=True)\n"
    )
    runner = EngineRunner(sys.executable, ["predict"], [], module=module)
    statuses: list[str] = []
    runner.status.connect(statuses.append)
    seen = _collect(runner)
    runner.start()
    assert wait_until(lambda: not runner.is_running() and ("done" in seen or "failed" in seen), 30)
    assert statuses == ["compiling the network"]
    assert "done" in seen and seen["malformed"] == []
