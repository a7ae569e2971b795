"""``python -m bench.finetune``: fine-tuning speed and memory on this CPU (``make bench`` runs it after ``bench``).

1. **Whole run**: ``python -m training finetune`` from the bundled demo model, 300 iterations (the demo network's
   default) on a 1024×600-pixel labelled area, in its own process: wall time from process start to exit (label
   rasterising, split, chips, training, hold-out evaluation through the engine, model file) and its peak RSS. The
   area is a crop of iSAID image P0003 (../shared/data, real pixels, georeferencing assigned; without ../shared, the
   project's own crop of it with its mirror image, see :func:`isaid_area`) with polygons traced from its mask.
2. **Seconds per iteration** of every registered architecture at 256² and 512² chips (batch 2 on a CPU), with and
   without ``--freeze-backbone``: the fine-tuning trainer's own step (chip reading, augmentation, forward, backward,
   AdamW) on the bundled Potsdam sample, median of 3 steps after one warm-up step.

Machines are shared and noisy: read the figures as orders of magnitude; the CPU is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from osgeo import gdal, ogr, osr
from PIL import Image

from engine.classes import ISAID_CLASSES

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.path.join(ROOT, "..", "shared", "data", "isaid")
DEMO = os.path.join(ROOT, "resources", "models", "demo_lite_potsdam.rspmodel")
SAMPLE = os.path.join(ROOT, "resources", "samples", "potsdam_2_10_rgb.tif")
SAMPLE_LABELS = os.path.join(ROOT, "resources", "samples", "potsdam_2_10_labels.tif")
AREA = (1024, 600)  # width, height of the labelled area


def cpu_name() -> str:
    """The CPU model and its vector extensions relevant to torch."""
    model = platform.processor() or "?"
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if x in have]
                    break
    except OSError:
        pass
    return f"{model} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} cores"


def georeferenced(array: np.ndarray, path: str, gsd: float, nodata: int | None = None) -> str:
    """Write ``array`` ((H, W) or (H, W, 3) uint8) as a GeoTIFF on an assigned EPSG:32633 grid."""
    bands = 1 if array.ndim == 2 else array.shape[2]
    ds = gdal.GetDriverByName("GTiff").Create(path, array.shape[1], array.shape[0], bands, gdal.GDT_Byte)
    ds.SetGeoTransform((368000.0, gsd, 0.0, 5806000.0, 0.0, -gsd))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(bands):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(array if bands == 1 else array[:, :, b])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if bands == 3:
            band.SetColorInterpretation((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)[b])
        band = None
    ds = None
    return path


def trace(label_tif: str, gpkg: str, names: tuple[str, ...]) -> str:
    """Polygons of a class raster, with the class name in a string field ``class``."""
    src = gdal.Open(label_tif)
    band = src.GetRasterBand(1)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg)
    layer = out.CreateLayer("labels", srs=osr.SpatialReference(wkt=src.GetProjection()), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    for f in layer:
        f.SetField("class", names[f.GetField("code")])
        layer.SetFeature(f)
    del layer
    out = band = None
    return gpkg


def isaid_area() -> tuple[np.ndarray, np.ndarray]:
    """The 1024×600 image and class mask: from ../shared/data when present (a checkout next to it), else the
    project's own 700×623 crop of the same image (tests/data/isaid) extended by its mirror image."""
    if os.path.isdir(SHARED):
        image = np.array(Image.open(os.path.join(SHARED, "images", "P0003.png")).convert("RGB"))
        mask = np.array(Image.open(os.path.join(SHARED, "semantic_masks_index", "P0003_semantic_idx.png")))
    else:
        own = os.path.join(ROOT, "tests", "data", "isaid")
        image = np.array(Image.open(os.path.join(own, "P0003_crop.png")).convert("RGB"))
        mask = np.array(Image.open(os.path.join(own, "P0003_crop_semantic_idx_DERIVED.png")))
        image, mask = np.concatenate([image, image[:, ::-1]], 1), np.concatenate([mask, mask[:, ::-1]], 1)
    return image[: AREA[1], : AREA[0]], mask[: AREA[1], : AREA[0]]


def whole_run(tmp: str, iters: int) -> dict[str, object]:
    """Fine-tune the demo model on the iSAID crop in a child process; wall time and peak RSS."""
    image, mask = isaid_area()
    raster = georeferenced(image, os.path.join(tmp, "p0003.tif"), 0.3)
    labels = trace(georeferenced(mask, os.path.join(tmp, "p0003_labels.tif"), 0.3, 255),
                   os.path.join(tmp, "p0003_labels.gpkg"), ISAID_CLASSES)  # fmt: skip
    cmd = [sys.executable, "-m", "training", "finetune", "--raster", raster, "--labels", labels, "--class-field",
           "class", "--output", os.path.join(tmp, "p0003.rspmodel"), "--init", DEMO, "--iters", str(iters),
           "--device", "cpu"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"finetune failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    done = json.loads(proc.stdout.splitlines()[-1])
    start = next(json.loads(x) for x in proc.stdout.splitlines() if '"event": "start"' in x)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "iterations": iters,
        "metrics": done["metrics"],
        **{k: start[k] for k in ("classes", "chips", "holdout_blocks")},
    }


def seconds_per_iteration(arch: str, tile: int, freeze: bool, tmp: str, steps: int = 3) -> float:
    """Median wall time of the fine-tuning trainer's step for ``arch`` (scratch weights) on the Potsdam sample."""
    from engine.tiling import Window
    from training.finetune.chips import ChipDataset
    from training.finetune.classes import build_table
    from training.finetune.labels import LabelSource
    from training.finetune.prepare import prepare_data
    from training.finetune.run import DEFAULT_RECIPE, RECIPES
    from training.finetune.start import build_start
    from training.finetune.training import FinetuneTrainer, make_config
    from training.transforms import TrainPipeline

    labels = LabelSource(SAMPLE_LABELS)
    table = build_table(labels.values())
    work = tempfile.mkdtemp(dir=tmp)
    data = prepare_data([(SAMPLE, SAMPLE_LABELS)], None, table, [labels], ("red", "green", "blue"), (0.0, 255.0),
                        None, None, 128, 128, 0.2, 0, work, lambda: None)  # fmt: skip
    data.chips = [(0, Window(0, 0, tile, tile))]  # timing only: any chip of the sample will do
    start = build_start(table.num_classes, table.names, arch=arch)
    if freeze:
        for p in start.model.backbone.parameters():
            p.requires_grad = False
    recipe = RECIPES.get(arch, DEFAULT_RECIPE)
    config = make_config(start, table, data, recipe, tile, steps + 1, 2, False, 0, work, True)
    pipe = TrainPipeline(tile, tile, (0.5, 2.0), 0.75, 0.5, True, config.mean, config.std, 255)
    trainer = FinetuneTrainer(config, work, "cpu", start.model, ChipDataset(data.sources, data.chips, pipe, True),
                              table, lambda e: None, threading.Event())  # fmt: skip
    if freeze:
        trainer.frozen.append(start.model.backbone)
    batches = trainer._loader()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        trainer.train_step(batches)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Print (and save under ``--out``) the figures of the module docstring."""
    p = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_output")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--archs", nargs="*", help="architectures for the per-iteration table (default: all registered)")
    p.add_argument("--skip-whole", action="store_true")
    args = p.parse_args(argv)
    from engine.models import ARCHS

    os.makedirs(args.out, exist_ok=True)
    results: dict[str, object] = {"cpu": cpu_name()}
    print(f"CPU: {results['cpu']}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_whole:
            r = whole_run(tmp, args.iters)
            results["whole_run"] = r
            print(f"whole run, demo network, {args.iters} iterations, {AREA[0]}x{AREA[1]} px labelled: "
                  f"{r['seconds']} s, peak RSS {r['peak_rss_mb']} MB, hold-out {r['metrics']}")  # fmt: skip
        table = []
        for arch in args.archs or list(ARCHS):
            for tile in (256, 512):
                for freeze in (False, True):
                    s = seconds_per_iteration(arch, tile, freeze, tmp)
                    table.append({"arch": arch, "tile": tile, "freeze_backbone": freeze, "s_per_iter": round(s, 3)})
                    print(f"{arch:16s} {tile}²  batch 2  freeze={freeze!s:5s}  {s:7.3f} s/iteration", flush=True)
        results["seconds_per_iteration"] = table
    with open(os.path.join(args.out, "finetune.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
