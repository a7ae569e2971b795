"""``python -m bench.kill_resume``: kill -9 a real 3072² run at 25 %, 50 % and 75 %, ``--resume``, compare.

The raster is a 3×3 mosaic of real 1024² aerial tiles from ../shared/data (LoveDA 0 and 2, DeepGlobe, Swiss drone;
each used three times in a fixed order), RGB, EPSG:32632 *assigned* at the demo model's 5 cm GSD, so the bundled demo
model runs 256 windows (tile 256, stride 192) with no resampling. Outputs as a user asks for them: labels,
confidence and polygons, compressed as the defaults are.

Each repeat: for each fraction, start ``python -m engine predict``, SIGKILL it once a ``progress`` event reports that
fraction of the windows, run it again with ``--resume``, and compare the labels and confidence arrays with an
uninterrupted run's (byte for byte) and the polygons (class and geometry sets). Prints one line per kill and a
summary; ``--load N`` runs N busy-looping processes during the whole benchmark (the machine "loaded by another
CPU-heavy process"). JSON under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from osgeo import gdal, ogr, osr
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.join(ROOT, "..", "shared", "data")
DEMO = os.path.join(ROOT, "resources", "models", "demo_lite_potsdam.rspmodel")
TILES = (
    "loveda/images/0.png",
    "loveda/images/2.png",
    "deepglobe/6399_crop1024_x0_y768_rgb.png",
    "swiss_drone/IMG_8733_crop1024_x256_y512_rgb.png",
)
ENV = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}


def cpu_line() -> str:
    """CPU model and the vector/matrix flags, from /proc/cpuinfo."""
    model, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = [x for x in line.split(":", 1)[1].split() if x.startswith(("avx", "amx"))]
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {' '.join(flags)}"


def mosaic(path: str) -> str:
    """The 3072² real mosaic (see the module docstring)."""
    rgb = np.zeros((3, 3072, 3072), np.uint8)
    for i in range(9):
        tile = np.asarray(Image.open(os.path.join(SHARED, TILES[i % len(TILES)])).convert("RGB"))[:1024, :1024]
        r, c = divmod(i, 3)
        rgb[:, r * 1024 : (r + 1) * 1024, c * 1024 : (c + 1) * 1024] = tile.transpose(2, 0, 1)
    ds = gdal.GetDriverByName("GTiff").Create(path, 3072, 3072, 3, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((400000.0, 0.05, 0.0, 5300000.0, 0.0, -0.05))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rgb[b])
        ds.GetRasterBand(b + 1).SetColorInterpretation(gdal.GCI_RedBand + b)
    ds = None
    return path


def args_for(raster: str, out: str) -> list[str]:
    return [sys.executable, "-m", "engine", "predict", "--model", DEMO, "--input", raster,
            "--output", os.path.join(out, "classes.tif"), "--confidence", os.path.join(out, "confidence.tif"),
            "--vector", os.path.join(out, "polygons.gpkg")]  # fmt: skip


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run(args: list[str]) -> list[dict]:
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"engine failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return events_of(proc.stdout)


def kill_at(args: list[str], fraction: float) -> int:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert proc.stdout is not None
    done = -1
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "progress" and event["done"] >= fraction * event["total"]:
            os.kill(proc.pid, signal.SIGKILL)
            done = event["done"]
            break
    proc.wait()
    return done


def arrays(folder: str) -> tuple[np.ndarray, np.ndarray, list]:
    labels = gdal.Open(os.path.join(folder, "classes.tif")).ReadAsArray()
    conf = gdal.Open(os.path.join(folder, "confidence.tif")).ReadAsArray()
    ds = ogr.Open(os.path.join(folder, "polygons.gpkg"))
    polys = sorted((f.GetField("class_id"), f.GetGeometryRef().ExportToWkt()) for f in ds.GetLayer())
    return labels, conf, polys


def burn() -> None:  # pragma: no cover - a load generator
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--fractions", default="0.25,0.5,0.75")
    p.add_argument("--load", type=int, default=0, help="busy-looping processes run meanwhile")
    p.add_argument("--out", default="bench_output")
    a = p.parse_args(argv)
    fractions = [float(x) for x in a.fractions.split(",")]
    import multiprocessing

    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(a.load)]
    for b in burners:
        b.start()
    work = tempfile.mkdtemp(prefix="rsp_kill_resume_")
    print(f"CPU: {cpu_line()}; load: {a.load} busy-looping processes")
    try:
        raster = mosaic(os.path.join(work, "mosaic_3072.tif"))
        ref = os.path.join(work, "reference")
        os.mkdir(ref)
        t0 = time.monotonic()
        whole = next(e for e in run(args_for(raster, ref)) if e["event"] == "start")["total"]
        print(f"uninterrupted: {whole} windows, {time.monotonic() - t0:.0f} s")
        expected = arrays(ref)
        rows = []
        for rep in range(a.repeats):
            for fraction in fractions:
                out = os.path.join(work, f"r{rep}_{int(fraction * 100)}")
                os.mkdir(out)
                killed = kill_at(args_for(raster, out), fraction)
                t1 = time.monotonic()
                resumed = run([*args_for(raster, out), "--resume"])
                start = next(e for e in resumed if e["event"] == "start")
                got = arrays(out)
                same = [bool(np.array_equal(x, y)) for x, y in zip(got[:2], expected[:2], strict=True)]
                row = {
                    "repeat": rep,
                    "fraction": fraction,
                    "killed_after_windows": killed,
                    "resumed_from_row": start.get("resumed_from_row"),
                    "resume_windows": start["total"],
                    "whole_windows": whole,
                    "labels_identical": same[0],
                    "confidence_identical": same[1],
                    "polygons_identical": got[2] == expected[2],
                    "resume_seconds": round(time.monotonic() - t1, 1),
                }
                rows.append(row)
                print(json.dumps(row))
                shutil.rmtree(out)
        ok = [r for r in rows if r["labels_identical"] and r["confidence_identical"] and r["polygons_identical"]
              and r["resume_windows"] < whole]  # fmt: skip
        print(f"identical and fewer windows: {len(ok)} of {len(rows)} kills")
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "kill_resume.json"), "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu_line(), "load": a.load, "whole_windows": whole, "runs": rows}, f, indent=1)
        return 0 if len(ok) == len(rows) else 1
    finally:
        for b in burners:
            b.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
