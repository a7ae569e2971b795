"""Check environment: run ``<interpreter> -m engine.selfcheck --json`` and say what is missing and how to fix it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qgis.PyQt.QtCore import QProcess

from .engine_runner import engine_environment

SELFCHECK_TIMEOUT_MS = 120_000
REQUIRED = ("numpy", "gdal", "torch", "timm")
VENV_FIX = (
    "python3 -m venv --system-site-packages ~/.rsp-venv && ~/.rsp-venv/bin/pip install "
    "'numpy==1.26.4' 'torch==2.13.0' 'timm==1.0.31' safetensors scikit-image "
    "--extra-index-url https://download.pytorch.org/whl/cpu"
)


@dataclass(frozen=True)
class EnvironmentReport:
    """The self-check's findings: ``ok`` when everything the engine needs is importable."""

    interpreter: str
    ok: bool
    versions: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    fix: str = ""
    problem: str = ""

    def as_html(self) -> str:
        """The report as HTML: a ready/missing headline, a version table and the fix command."""
        rows = "".join(
            f"<tr><td>{k}</td><td>{self.versions.get(k) if self.versions.get(k) is not None else '<b>missing</b>'}"
            "</td></tr>"
            for k in ("python", "gdal", "numpy", "torch", "timm", "cuda_available", "cuda_device")
            if k in self.versions
        )
        head = (
            "<b style='color:#080'>The engine environment is ready.</b>"
            if self.ok
            else f"<b style='color:#b00'>{self.problem or 'Missing: ' + ', '.join(self.missing)}</b>"
        )
        fix = f"<p>Fix: <code>{self.fix}</code></p>" if self.fix and not self.ok else ""
        return f"{head}<p>Interpreter: <code>{self.interpreter}</code></p><table>{rows}</table>{fix}"


def report_from_output(interpreter: str, exit_code: int, stdout: str, stderr: str) -> EnvironmentReport:
    """Turn the self-check's output into a report (pure; separated for tests)."""
    data: dict[str, Any] | None = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(data, dict):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        fix = f"Set an interpreter that has the engine's packages in the plugin settings, or create one: {VENV_FIX}"
        return EnvironmentReport(interpreter, False, {}, list(REQUIRED), fix, f"The self-check did not run: {tail}")
    missing = [str(m) for m in data.get("missing") or []]
    fix = ""
    if missing:
        fix = f"{interpreter} -m pip install " + " ".join(
            {"gdal": "gdal (Debian: apt install python3-gdal)", "numpy": "'numpy==1.26.4'"}.get(m, m) for m in missing
        )
        if data.get("fix"):
            fix += f"   (in a source checkout: {data['fix']})"
    return EnvironmentReport(interpreter, not missing and exit_code == 0, data, missing, fix)


def check_environment(interpreter: str) -> EnvironmentReport:
    """Run the self-check in ``interpreter`` (blocks up to :data:`SELFCHECK_TIMEOUT_MS`)."""
    process = QProcess()
    process.setProcessEnvironment(engine_environment())
    process.start(interpreter, ["-m", "engine.selfcheck", "--json"])
    if not process.waitForStarted(10_000):
        return EnvironmentReport(
            interpreter,
            False,
            {},
            list(REQUIRED),
            f"Choose an existing Python 3 interpreter in the plugin settings, or create one: {VENV_FIX}",
            f"Cannot start {interpreter}",
        )
    if not process.waitForFinished(SELFCHECK_TIMEOUT_MS):
        process.kill()
        process.waitForFinished(5000)
        return EnvironmentReport(interpreter, False, {}, [], "", "The self-check did not finish in time.")
    stdout = bytes(process.readAllStandardOutput()).decode("utf-8", errors="replace")
    stderr = bytes(process.readAllStandardError()).decode("utf-8", errors="replace")
    return report_from_output(interpreter, process.exitCode(), stdout, stderr)
