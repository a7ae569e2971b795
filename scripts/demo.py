"""``make demo``: segment the bundled sample raster with the bundled demo model and draw a preview.

Writes into ``demo_output/`` (or ``--out``): ``potsdam_2_10_classes.tif`` (styled class raster),
``potsdam_2_10_polygons.gpkg`` (class_id, class_name, area_m2) and ``potsdam_2_10_preview.png``
(image | prediction | legend), through the same engine CLI that the plugin runs, and prints where they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from osgeo import gdal
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any folder
MODEL = ROOT / "resources" / "models" / "demo_lite_potsdam.rspmodel"
SAMPLE = ROOT / "resources" / "samples" / "potsdam_2_10_rgb.tif"
LEGEND_WIDTH = 220
ROW = 22


def run_engine(out: Path) -> dict:
    labels, vector = out / "potsdam_2_10_classes.tif", out / "potsdam_2_10_polygons.gpkg"
    cmd = [sys.executable, "-m", "engine", "predict", "--model", str(MODEL), "--input", str(SAMPLE)]
    cmd += ["--output", str(labels), "--vector", str(vector), "--min-area", "0.5", "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = next((e for e in events if e.get("event") == "done"), None)
    if proc.returncode != 0 or done is None:
        error = next((e for e in events if e.get("event") == "error"), {"message": proc.stderr[-500:]})
        raise SystemExit(f"demo: the engine failed: {error.get('message')} ({error.get('hint', '')})")
    return done


def preview(labels_path: Path, done: dict, out: Path) -> Path:
    from engine.model_file import read_model_info

    info = read_model_info(MODEL)
    image = gdal.Open(str(SAMPLE)).ReadAsArray().transpose(1, 2, 0)  # (H, W, 3)
    labels = gdal.Open(str(labels_path)).ReadAsArray()
    palette = np.zeros((256, 3), np.uint8)
    palette[: info.num_classes] = np.asarray(info.colors, np.uint8)
    pred = palette[labels]
    h, w = labels.shape
    canvas = Image.new("RGB", (2 * w + LEGEND_WIDTH + 20, max(h, ROW * (info.num_classes + 2))), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (0, 0))
    canvas.paste(Image.fromarray(pred), (w + 10, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = 2 * w + 20
    draw.text((x0, 4), "demo model (not RSP)", fill="black")
    pixels = {c["id"]: c["pixels"] for c in done.get("classes", [])}
    total = max(sum(pixels.values()), 1)
    for i, (name, color) in enumerate(zip(info.class_names, info.colors, strict=True)):
        y = ROW * (i + 1) + 4
        draw.rectangle((x0, y, x0 + 16, y + 16), fill=tuple(color), outline="black")
        draw.text((x0 + 24, y + 2), f"{name} {100 * pixels.get(i, 0) / total:.0f}%", fill="black")
    path = out / "potsdam_2_10_preview.png"
    canvas.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "demo_output"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    done = run_engine(out)
    png = preview(Path(done["outputs"]["labels"]), done, out)
    print(f"demo: done in {time.perf_counter() - t:.1f} s")
    for key, path in done["outputs"].items():
        print(f"  {key:<8} {path}")
    print(f"  preview  {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
