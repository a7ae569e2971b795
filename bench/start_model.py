"""``python -m bench.start_model``: the general start model of ``training finetune`` and its held-out twins.

``training finetune`` with none of ``--init/--backbone/--arch`` starts from the first model of
:data:`training.finetune.start.DEFAULT_START_MODELS` found in ``resources/models/``. The demo network learnt from
one 512² Potsdam crop; the **general start model** (``resources/models/general_lite.rspmodel``, ``make
start-model``) is the demo network fine-tuned, with the project's own ``training finetune``, on every labelled
real scene of ../shared/data that may go into a product (:data:`SHIPPED`): LoveDA tiles 0 and 2 (0.3 m, rural
China), DeepGlobe 6399 (0.5 m), the Dubai tile, the Swiss drone crop (cm) and the Potsdam crop (5 cm), at their own
pixels, with the union of their class names (a name two datasets share is one class: ``building``, ``road``,
``water``, ``forest``, ``agriculture``, ``barren``, ``background``). The iSAID samples are left out: their terms
forbid redistribution in a product release. The unlabelled images are not used (no self-supervised stage).

Its classes matter downstream: ``training finetune`` keeps the start model's classifier row of every class whose
name the analyst's labels share, so labels that call a class ``building`` or ``water`` start from what it learnt.

To measure it honestly, ``bench.finetune_quality --start general`` never uses a start model that saw the scene it
scores: the scenes are split in two folds (:data:`FOLDS`) and each scene is fine-tuned from the model trained on
the *other* fold only (built here as ``<out>/start_models/general_without_<fold>.rspmodel``, same recipe). The
shipped model, trained on both folds, is never scored on these scenes.

Deterministic for a seed and a thread count (the fine-tune is). The model's GSD is cleared: it was trained at the
native pixels of imagery from 5 cm to 0.5 m, so it names no single ground resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from osgeo import gdal

from bench.finetune import DEMO, ROOT, cpu_name, georeferenced
from bench.finetune_quality import GSD, IGNORE, SCENES, child_env, load_scene

FOLDS: dict[str, tuple[str, ...]] = {
    "a": ("loveda0", "deepglobe", "swiss_drone"),
    "b": ("loveda2", "dubai", "potsdam"),
}
SHIPPED = FOLDS["a"] + FOLDS["b"]
SHIPPED_MODEL = os.path.join(ROOT, "resources", "models", "general_lite.rspmodel")
ITERS = 1200  # 4 crops of 256² per iteration; the six scenes hold about 5 Mpx of labels
SEED = 0


def union_names(scenes: tuple[str, ...]) -> list[str]:
    """The class names of ``scenes``, each once, sorted."""
    return sorted({n for s in scenes for n in SCENES[s].classes.values()})


def write_scene(name: str, names: list[str], folder: str) -> tuple[str, str]:
    """The scene's image GeoTIFF and its class raster (codes into ``names``, category names set, 255 nodata)."""
    image, mask, own = load_scene(SCENES[name])
    codes = np.full(mask.shape, IGNORE, np.uint8)
    for i, n in enumerate(own):
        codes[mask == i] = names.index(n)
    raster = georeferenced(image, os.path.join(folder, f"{name}.tif"), GSD)
    labels = georeferenced(codes, os.path.join(folder, f"{name}_labels.tif"), GSD, nodata=IGNORE)
    ds = gdal.Open(labels, gdal.GA_Update)
    ds.GetRasterBand(1).SetCategoryNames(names)
    ds = None
    return raster, labels


def build(scenes: tuple[str, ...], output: str, iters: int = ITERS, seed: int = SEED, threads: int | None = None,
          log: str | None = None) -> dict:  # fmt: skip
    """Fine-tune the demo network on ``scenes`` (all their labels) into ``output``; returns the ``done`` event."""
    names = union_names(scenes)
    with tempfile.TemporaryDirectory(prefix="rsp-start-") as tmp:
        cmd = [sys.executable, "-m", "training", "finetune", "--init", DEMO, "--output", output, "--iters", str(iters),
               "--seed", str(seed), "--device", "cpu", "--no-refit", "--overwrite", "--work-dir",
               os.path.join(tmp, "work")]  # fmt: skip
        for s in scenes:
            raster, labels = write_scene(s, names, tmp)
            cmd += ["--raster", raster, "--labels", labels]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads), cwd=ROOT)
        if log:
            with open(log, "w", encoding="utf-8") as f:
                f.write(proc.stdout + proc.stderr)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not events or events[-1].get("event") != "done":
            tail = (proc.stderr or proc.stdout)[-2000:]
            raise RuntimeError(f"training the start model failed ({proc.returncode}):\n{tail}")
    _clear_gsd(output, scenes)
    done = events[-1]
    done["seconds_wall"] = round(time.monotonic() - t0, 1)
    return done


def _clear_gsd(path: str, scenes: tuple[str, ...]) -> None:
    """No single GSD (see the module docstring); say what it was trained on."""
    from engine.model_file import read_model_info, read_state_dict, save_model_file

    info = read_model_info(path)
    description = (
        f"General start model for `training finetune`: the demo network fine-tuned on all labels of the real scenes "
        f"{', '.join(scenes)} (../shared/data; `python -m bench.start_model`), at their native pixels (5 cm to "
        f"0.5 m). {info.description}"
    )
    save_model_file(path, read_state_dict(path), dataclasses.replace(info, gsd_m=None, description=description))


def without(scene: str, folder: str, threads: int | None = None) -> str:
    """The start model trained on the fold that does not hold ``scene`` (built into ``folder`` when missing); for a
    scene in no fold (the iSAID samples), the shipped model, which never saw it."""
    fold = next((k for k, v in FOLDS.items() if scene in v), None)
    if fold is None:
        if not os.path.isfile(SHIPPED_MODEL):
            build(SHIPPED, SHIPPED_MODEL, threads=threads)
        return SHIPPED_MODEL
    path = os.path.join(folder, f"general_without_{fold}.rspmodel")
    if not os.path.isfile(path):
        other = tuple(s for k, v in FOLDS.items() if k != fold for s in v)
        os.makedirs(folder, exist_ok=True)
        build(other, path, threads=threads, log=path + ".log")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.start_model", description=__doc__.split("\n")[0])
    p.add_argument("--output", default=SHIPPED_MODEL, help="the shipped model (default: %(default)s)")
    p.add_argument("--folds", metavar="DIR", help="build the two held-out fold models into DIR instead")
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the training process")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(ROOT, "..", "shared", "data")):
        print("bench.start_model: ../shared/data is missing (the real scenes); nothing built")
        return 0
    print(f"CPU: {cpu_name()}", flush=True)
    if args.folds:
        for fold, scenes in FOLDS.items():
            path = without(scenes[0], args.folds, args.threads)
            print(f"fold {fold} left out: {path}", flush=True)
        return 0
    done = build(SHIPPED, os.path.abspath(args.output), args.iters, threads=args.threads)
    print(json.dumps({k: done.get(k) for k in ("model", "metrics", "seconds", "seconds_wall")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
