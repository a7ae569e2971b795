"""``python -m bench.finetune_quality``: does fine-tuning make a useful map? Real scenes, two label regimes, baselines.

For every labelled real scene in ../shared/data (see :data:`SCENES`) the image is written as a GeoTIFF (georeferencing
assigned) and labels are made the way an analyst makes them, from the reference mask of the **top 60 %** of rows:

- *dense*: every labelled pixel of the top 60 %, traced into polygons (``gdal.Polygonize``);
- *sparse*: 40 squares of 32×32 px at seeded random places in the top 60 % (about 5 % of it), traced the same way.

Each is scored on the **bottom 40 %** (never labelled) against the reference mask, from one confusion matrix per
run: mIoU as mmseg computes it (the mean over classes whose union of prediction and reference is not empty) and OA.
Columns: always the most frequent training class (*majority*); a random-forest pixel classifier as the
Semi-Automatic Classification Plugin's users run it (scikit-learn ``RandomForestClassifier``, 100 trees, on
scikit-image ``multiscale_basic_features`` of the RGB image, fitted on 60 000 labelled pixels sampled at random);
this project's ``python -m training finetune`` with its defaults, in its own process (then ``python -m engine
predict`` on the bottom 40 %), with wall time and peak RSS of each process, from each start of ``--starts``:
``general`` (the general start model, the default start, trained on the *other* fold of scenes:
:mod:`bench.start_model`), ``demo`` (the demo network), ``scratch`` (random weights).

scikit-learn is a benchmark-only dependency (the engine never imports it). JSON results go to
``<out>/finetune_quality.json``; a markdown table is printed. Machines are shared and noisy: the CPU is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from osgeo import gdal
from PIL import Image

from bench.finetune import DEMO, ROOT, cpu_name, georeferenced, trace

DATA = os.path.join(ROOT, "..", "shared", "data")
LABELLED_SHARE = 0.6  # the top 60 % of rows are labelled, the bottom 40 % are the test
SPARSE_SQUARES = 40
SPARSE_SIDE = 32
RF_SAMPLES = 60_000
RF_TREES = 100
IGNORE = 255
GSD = 0.3  # assigned; the same for training and prediction, so it only names the grid


@dataclass(frozen=True)
class Scene:
    """A real image and its reference mask: ``classes[v]`` names mask value ``v``; ``ignore`` values are unlabelled."""

    name: str
    image: str
    mask: str
    classes: dict[int, str]
    ignore: tuple[int, ...] = ()


LOVEDA = {1: "background", 2: "building", 3: "road", 4: "water", 5: "barren", 6: "forest", 7: "agriculture"}
ISAID = {0: "background", 2: "storage_tank", 8: "large_vehicle", 9: "small_vehicle"}
SCENES: dict[str, Scene] = {
    s.name: s
    for s in (
        Scene("loveda0", "loveda/images/0.png", "loveda/labels/0.png", LOVEDA, (0,)),
        Scene("loveda2", "loveda/images/2.png", "loveda/labels/2.png", LOVEDA, (0,)),
        Scene(
            "deepglobe",
            "deepglobe/6399_crop1024_x0_y768_rgb.png",
            "deepglobe/6399_crop1024_x0_y768_labelid.png",
            {0: "urban", 1: "agriculture", 2: "rangeland", 3: "forest", 4: "water", 5: "barren"},
            (6,),
        ),
        Scene(
            "dubai",
            "dubai/tile1_image_part_001.jpg",
            "dubai/tile1_image_part_001_labelid.png",
            {1: "building", 2: "land", 3: "road", 4: "vegetation", 5: "water"},
            (0,),
        ),
        Scene(
            "swiss_drone",
            "swiss_drone/IMG_8733_crop1024_x256_y512_rgb.png",
            "swiss_drone/IMG_8733_crop1024_x256_y512_labelid.png",
            {
                0: "background",
                1: "structure",
                2: "building",
                3: "paved",
                4: "non_paved",
                5: "train_tracks",
                6: "plants",
                7: "vehicle",
                8: "water",
                9: "people",
            },
        ),
        Scene(
            "potsdam",
            "potsdam/2_10_0_0_512_512_rgb.png",
            "potsdam/2_10_0_0_512_512_label_idx.png",
            {1: "impervious", 2: "building", 3: "low_vegetation", 4: "tree", 5: "car", 6: "clutter"},
            (0,),
        ),
        Scene("isaid_p0003", "isaid/images/P0003.png", "isaid/semantic_masks_index/P0003_semantic_idx.png", ISAID),
        Scene("isaid_p0004", "isaid/images/P0004.png", "isaid/semantic_masks_index/P0004_semantic_idx.png", ISAID),
    )
}
REGIMES = ("dense", "sparse")


def load_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(image (H, W, 3) uint8, mask (H, W) uint8 of class ids or IGNORE, class names by id)``."""
    image = np.array(Image.open(os.path.join(DATA, scene.image)).convert("RGB"))
    raw = np.array(Image.open(os.path.join(DATA, scene.mask)))
    names = [scene.classes[v] for v in sorted(scene.classes)]
    mask = np.full(raw.shape, IGNORE, np.uint8)
    for i, v in enumerate(sorted(scene.classes)):
        mask[raw == v] = i
    return image, mask, names


def split_row(height: int) -> int:
    """First row of the test part (the bottom 40 %)."""
    return round(height * LABELLED_SHARE)


def regime_labels(mask: np.ndarray, regime: str, seed: int) -> np.ndarray:
    """The analyst's labels: ``mask`` in the top 60 % (dense) or in 40 seeded 32² squares there (sparse)."""
    top = split_row(mask.shape[0])
    out = np.full(mask.shape, IGNORE, np.uint8)
    if regime == "dense":
        out[:top] = mask[:top]
        return out
    rng = np.random.default_rng(seed)
    for _ in range(SPARSE_SQUARES):
        r = int(rng.integers(0, top - SPARSE_SIDE + 1))
        c = int(rng.integers(0, mask.shape[1] - SPARSE_SIDE + 1))
        out[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE] = mask[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE]
    return out


def confusion(pred: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """``(k, k)`` counts ``[reference, prediction]`` over pixels labelled in ``ref`` and predicted in ``0..k-1``."""
    keep = (ref < k) & (pred < k)
    return np.bincount(ref[keep].astype(np.int64) * k + pred[keep], minlength=k * k).reshape(k, k)


def scores(counts: np.ndarray) -> dict[str, Any]:
    """mIoU (mmseg: mean over classes with a non-empty union), OA, and per-class IoU (None where undefined)."""
    inter = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {
        "mIoU": round(float(np.nanmean(iou)) * 100, 2),
        "OA": round(float(inter.sum() / max(counts.sum(), 1)) * 100, 2),
        "iou": [None if np.isnan(x) else round(float(x) * 100, 2) for x in iou],
        "predicted_classes": int((counts.sum(0) > 0).sum()),
    }


def majority(labels: np.ndarray, test: np.ndarray, k: int) -> dict[str, Any]:
    """Always the most frequent class of the training labels."""
    top = int(np.bincount(labels[labels < k], minlength=k).argmax())
    return scores(confusion(np.full_like(test, top), test, k))


def random_forest(
    image: np.ndarray, labels: np.ndarray, test_rows: slice, test: np.ndarray, k: int, seed: int
) -> tuple[dict[str, Any], float]:
    """The random-forest pixel classifier (see the module docstring); scores, seconds."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.monotonic()
    features = multiscale_basic_features(image, channel_axis=-1).astype(np.float32)  # (H, W, F)
    rows, cols = np.nonzero(labels < k)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), min(RF_SAMPLES, len(rows)), replace=False)
    forest = RandomForestClassifier(RF_TREES, n_jobs=2, random_state=seed)
    forest.fit(features[rows[pick], cols[pick]], labels[rows[pick], cols[pick]])
    part = features[test_rows]
    pred = forest.predict(part.reshape(-1, part.shape[-1])).reshape(part.shape[:2]).astype(np.uint8)
    return scores(confusion(pred, test, k)), round(time.monotonic() - t0, 1)


def child(cmd: list[str], log: str, threads: int | None = None) -> tuple[int, float, float, str]:
    """Run ``cmd`` (stderr to ``log``); ``(return code, seconds, peak RSS MB, stdout)``.

    The peak RSS is polled (psutil, every 0.2 s): a forked child's ``ru_maxrss`` starts at its parent's size.
    """
    import psutil

    t0 = time.monotonic()
    peak = [0]
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env=child_env(threads))  # fmt: skip
        watched = psutil.Process(proc.pid)

        def poll() -> None:
            while proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], watched.memory_info().rss)
                time.sleep(0.2)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        watcher.join()
    return proc.returncode, round(time.monotonic() - t0, 1), round(peak[0] / 2**20), out


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of a child: this checkout on the path; ``OMP_NUM_THREADS`` when ``threads`` is given."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def finetune(
    raster: str, gpkg: str, names: list[str], test_rows: slice, test: np.ndarray, tmp: str, seed: int, extra: list[str],
    threads: int | None = None, start: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``python -m training finetune`` (defaults; ``start`` options, default ``--init`` the demo) then ``engine
    predict`` on the test rows."""
    model = os.path.join(tmp, "model.rspmodel")
    cmd = [sys.executable, "-m", "training", "finetune", "--raster", raster, "--labels", gpkg, "--class-field",
           "class", "--output", model, *(start or ["--init", DEMO]), "--device", "cpu", "--seed", str(seed),
           "--overwrite", "--work-dir", os.path.join(tmp, "work"), *extra]  # fmt: skip
    rc, seconds, rss, out = child(cmd, os.path.join(tmp, "finetune.log"), threads)
    events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    if rc != 0:
        return {"error": next((e.get("message") for e in events if e["event"] == "error"), f"exit {rc}")}
    start = next(e for e in events if e["event"] == "start")
    done = next(e for e in events if e["event"] == "done")
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    pred_path = os.path.join(tmp, "pred.tif")
    height = test_rows.stop - test_rows.start
    cmd = [sys.executable, "-m", "engine", "predict", "--model", model, "--input", raster, "--output", pred_path,
           "--window", f"0,{test_rows.start},{test.shape[1]},{height}", "--device", "cpu", "--overwrite"]  # fmt: skip
    prc, pseconds, prss, pout = child(cmd, os.path.join(tmp, "predict.log"), threads)
    if prc != 0:
        return {"error": f"predict exit {prc}: {pout[-500:]}"}
    from engine.model_file import read_model_info

    model_names = list(read_model_info(model).class_names)
    ds = gdal.Open(pred_path)
    raw = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    pred = np.full(raw.shape, IGNORE, np.uint8)
    for i, n in enumerate(model_names):
        pred[raw == i] = names.index(n)
    return {
        **scores(confusion(pred, test, len(names))),
        "seconds": seconds,
        "peak_rss_mb": rss,
        "predict_seconds": pseconds,
        "predict_peak_rss_mb": prss,
        "chips": start.get("chips"),
        "chip": start.get("chip"),
        "iterations": start.get("iterations"),
        "holdout": done["metrics"],
        "warnings": warnings,
    }


STARTS = ("general", "demo", "scratch")


def start_options(start: str, scene: str, start_models: str, threads: int | None) -> list[str]:
    """``training finetune`` options of a start: ``general`` is the general start model trained *without* this
    scene's fold (:func:`bench.start_model.without`; the shipped one saw every scene), ``demo`` the demo network,
    ``scratch`` the lite network from random weights."""
    if start == "general":
        from bench.start_model import without

        return ["--init", without(scene, start_models, threads)]
    return ["--init", DEMO] if start == "demo" else ["--arch", "lite_resnet"]


def run_scene(
    scene: Scene, regime: str, tmp: str, seed: int, skip_finetune: bool, extra: list[str], threads: int | None = None,
    starts: tuple[str, ...] = ("demo",), start_models: str = "",
) -> dict[str, Any]:  # fmt: skip
    """All columns for one scene and regime (``finetune``: the first of ``starts``; ``by_start``: each)."""
    image, mask, names = load_scene(scene)
    k = len(names)
    top = split_row(mask.shape[0])
    labels = regime_labels(mask, regime, seed)
    test_rows = slice(top, mask.shape[0])
    test = mask[test_rows]
    folder = os.path.join(tmp, f"{scene.name}_{regime}")
    os.makedirs(folder, exist_ok=True)
    raster = georeferenced(image, os.path.join(folder, "image.tif"), GSD)
    gpkg = trace(georeferenced(labels, os.path.join(folder, "labels.tif"), GSD, IGNORE),
                 os.path.join(folder, "labels.gpkg"), tuple(names))  # fmt: skip
    row: dict[str, Any] = {
        "scene": scene.name,
        "regime": regime,
        "size": list(mask.shape),
        "labelled_pixels": int((labels < k).sum()),
        "classes": names,
        "train_pixels_per_class": np.bincount(labels[labels < k], minlength=k).tolist(),
        "test_pixels_per_class": np.bincount(test[test < k], minlength=k).tolist(),
        "majority": majority(labels, test, k),
    }
    row["random_forest"], row["random_forest_seconds"] = random_forest(image, labels, test_rows, test, k, seed)
    if not skip_finetune:
        row["by_start"] = {}
        for start in starts:
            work = os.path.join(folder, start)
            os.makedirs(work, exist_ok=True)
            opts = start_options(start, scene.name, start_models, threads)
            row["by_start"][start] = finetune(raster, gpkg, names, test_rows, test, work, seed, extra, threads, opts)
        row["finetune"] = row["by_start"][starts[0]]
    return row


def markdown(rows: list[dict[str, Any]], starts: tuple[str, ...] = ("demo",)) -> str:
    """The results as a markdown table (mIoU / OA on the bottom 40 %); the goal is judged on the first start."""
    heads = "".join(f" finetune from {s} mIoU / OA |" for s in starts)
    lines = [
        f"| scene | labels | px | majority mIoU | RF mIoU / OA (s) |{heads} finetune s / MB | goal | met |",
        "|---|---|---|---|---|" + "---|" * len(starts) + "---|---|---|",
    ]
    for r in rows:
        rf = r["random_forest"]
        by_start = r.get("by_start") or {starts[0]: r.get("finetune") or {}}
        goal = rf["mIoU"] + (10 if r["regime"] == "dense" else 0)
        cells = []
        for s in starts:
            ft = by_start.get(s) or {}
            cells.append(f"{ft['mIoU']:.1f} / {ft['OA']:.1f}" if "mIoU" in ft else ft.get("error", "-"))
        ft = by_start.get(starts[0]) or {}
        if "mIoU" in ft:
            cost = f"{ft['seconds']:.0f} / {ft['peak_rss_mb']}"
            met = "yes" if ft["mIoU"] >= goal else f"no ({ft['mIoU'] - goal:+.1f})"
        else:
            cost, met = "-", "-"
        lines.append(
            f"| {r['scene']} | {r['regime']} | {r['labelled_pixels']} | {r['majority']['mIoU']:.1f} | "
            f"{rf['mIoU']:.1f} / {rf['OA']:.1f} ({r['random_forest_seconds']:.0f}) | {' | '.join(cells)} | {cost} | "
            f"≥ {goal:.1f} | {met} |"
        )
    return "\n".join(lines)


def save(path: str, cpu: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The results so far as JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"cpu": cpu, "seed": args.seed, "threads": args.threads, "finetune_args": args.finetune_args,
                   "rows": rows}, f, indent=1)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the scenes and regimes asked for; print the table; write the JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.finetune_quality", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_output")
    p.add_argument("--scenes", nargs="*", choices=list(SCENES), help="default: all")
    p.add_argument("--regimes", nargs="*", choices=REGIMES, default=list(REGIMES))
    p.add_argument("--quick", action="store_true", help="loveda0 and potsdam only")
    p.add_argument("--seed", type=int, default=0, help="seed of the sparse squares, the forest and the fine-tune")
    p.add_argument("--skip-finetune", action="store_true", help="baselines only")
    p.add_argument("--keep", help="keep the rasters, labels and runs in this folder")
    p.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS of the finetune and predict processes (default: torch's)"
    )
    p.add_argument("--finetune-args", default="", help="extra finetune options, e.g. '--iters 600' (experiments)")
    p.add_argument(
        "--starts", nargs="*", choices=STARTS, default=["general", "demo"],
        help="start models to fine-tune from, each a column; the goal is judged on the first (default: general demo)",
    )  # fmt: skip
    p.add_argument(
        "--start-models", help="folder of the held-out general start models (default: <out>/start_models; built "
        "there when missing, about 10 min each)",
    )  # fmt: skip
    args = p.parse_args(argv)
    starts = tuple(args.starts) or ("general",)
    start_models = args.start_models or os.path.join(args.out, "start_models")
    names = args.scenes or (["loveda0", "potsdam"] if args.quick else list(SCENES))
    import torch

    cpu = cpu_name()
    print(f"CPU: {cpu}; torch {torch.__version__}; {os.cpu_count()} cores")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = args.keep or tmpdir
        for name in names:
            for regime in args.regimes:
                row = run_scene(
                    SCENES[name], regime, tmp, args.seed, args.skip_finetune, args.finetune_args.split(), args.threads,
                    starts, start_models,
                )  # fmt: skip
                rows.append(row)
                save(os.path.join(args.out, "finetune_quality.json"), cpu, args, rows)  # after each row: a partial run
                print(json.dumps({k: row[k] for k in ("scene", "regime", "majority", "random_forest")} | {
                    s: {k: v for k, v in ft.items() if k not in ("iou", "warnings")}
                    for s, ft in row.get("by_start", {}).items()}), flush=True)  # fmt: skip
    path = os.path.join(args.out, "finetune_quality.json")
    print(markdown(rows, starts))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
