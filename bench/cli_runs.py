"""Whole command-line runs, process start to exit: the engine against the re-implemented baseline on one GeoTIFF.

For each network: the baseline (``python -m bench.baseline``: a re-implementation written here after mmseg 0.21's
``slide_inference``, not the seed's own code, fp32, reference float order; ``python -m bench.seed_compare`` runs the
seed's code itself), then ``python -m engine warmup`` (not timed: it leaves the compiler cache warm, as an
analyst's earlier runs or the plugin's *Compile ahead* button do), then ``python -m engine predict`` with the defaults
and with ``--blend reference --precision fp32`` (the seed's labels), each in its own process, timed by wall clock
from ``Popen`` to exit. Ratios are baseline time ÷ engine time; agreements compare labels pixel by pixel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from start to exit of ``cmd``, and its JSON events (raises with stderr on failure)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return seconds, events


def labels(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def bench_cli(arch: str, model: Path, raster: Path, work: Path, threads: int, batch: int) -> dict[str, Any]:
    """The whole-run figures of one network (see the module docstring)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = sys.executable
    t_base, _ = timed([py, "-m", "bench.baseline", str(model), str(raster), str(work / "base.tif"), str(threads)], env)
    common = ["--model", str(model), "--threads", str(threads), "--batch-size", str(batch)]
    t_warm, warm = timed([py, "-m", "engine", "warmup", *common], env)
    predict = [py, "-m", "engine", "predict", *common, "--input", str(raster), "--overwrite"]
    t_default, ev_default = timed([*predict, "--output", str(work / "default.tif")], env)
    t_ref, _ = timed([*predict, "--output", str(work / "ref.tif"), "--blend", "reference", "--precision", "fp32"], env)
    base = labels(work / "base.tif")
    start = next(e for e in ev_default if e["event"] == "start")
    compiled = any(e["event"] == "status" and "compiling" in e.get("message", "") for e in ev_default)
    done = warm[-1] if warm else {}
    return {
        "arch": arch,
        "raster": raster.name,
        "windows": start["total"],
        "baseline_s": t_base,
        "default_s": t_default,
        "default_precision": start.get("precision"),
        "default_compiled": compiled,
        "speedup_default": t_base / t_default,
        "agreement_default": float((labels(work / "default.tif") == base).mean()),
        "reference_fp32_s": t_ref,
        "speedup_reference_fp32": t_base / t_ref,
        "labels_identical_reference_fp32": float((labels(work / "ref.tif") == base).mean()),
        "warmup_s": t_warm,
        "warmup": {k: done.get(k) for k in ("precision", "eager_s", "compiled_s", "compile_s", "cache")},
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The whole-run table (markdown)."""
    lines = [
        "Whole CLI runs, process start to exit, versus the bench/baseline.py process (a re-implementation, not the "
        "seed's code; speed-up ×, label agreement):",
        "",
        "| network | raster | baseline s | default s | default: precision, compiled | default | "
        "`--blend reference --precision fp32` | warmup (not timed): eager → compiled s/window, compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["warmup"]
        lines.append(
            f"| {r['arch']} | {r['raster']} ({r['windows']} win) | {r['baseline_s']:.1f} | {r['default_s']:.1f} | "
            f"{r['default_precision']}, {'yes' if r['default_compiled'] else 'no'} | "
            f"{r['speedup_default']:.2f}× {100 * r['agreement_default']:.2f} % | "
            f"{r['speedup_reference_fp32']:.2f}× {100 * r['labels_identical_reference_fp32']:.3f} % | "
            f"{w.get('precision')}: {w.get('eager_s')} → {w.get('compiled_s')}, "
            f"{w.get('compile_s')} ({w.get('cache')}) |"
        )
    return "\n".join(lines)
