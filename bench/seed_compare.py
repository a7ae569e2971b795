"""``python -m bench.seed_compare``: the engine against the seed's own ``slide_inference``, same network, same image.

The reference side is the seed's code itself (RSP @ f298187, whose "Semantic Segmentation" folder is mmseg 0.21.0),
run by ``../shared/seed_bench/seed_slide.py`` in its own environment (``/tmp/seed_venv``, built by
``bash ../shared/seed_bench/setup.sh`` in about a minute). That script builds the seed's UperNet with seeded random
weights, saves them as an mmseg checkpoint, times ``slide_inference`` alone (model already built; crop 512, stride
384) and saves its labels and its top-1 minus top-2 logit margin. The checkpoint is imported here with
``python -m engine import``, so both sides run the same network.

For each network and raster size, runs alternate (the order rotates each round, so the machine's load drifts over
every mode alike):

- **seed**: ``seed_slide.py`` → seconds of ``slide_inference`` alone (its ``seed_timing.json``);
- **reference**: the whole ``python -m engine predict --blend reference --precision fp32`` process, start to exit
  (loading, reading, writing, overviews included); its labels must equal the seed's;
- **default**: the whole ``python -m engine predict`` process with the engine's defaults (``--precision auto``,
  ``--compile auto``, smooth blending; nothing is warmed up first);
- **exact** (only with ``--exact``): ``--exact --blend reference --precision fp32``, the reference float order
  (no low-resolution head fusion, no BatchNorm folding): the mode that reproduces the seed's logits bit for bit, so
  its labels are the seed's even at near-ties; judged against the reference mode's goals.

Reported per mode: the ratio of medians (seed seconds ÷ engine seconds; above 1 the engine is faster), label
agreement with the seed's labels over all pixels and over the pixels where the seed's margin is at least its median
(random weights have near-ties, where any rounding flips a label), the precision and whether the run compiled.

The test image is real RGB imagery, not synthetic: the four labelled 1024² tiles of ``../shared/data`` (LoveDA 0
and 2, DeepGlobe 6399, the Swiss drone crop) mosaicked 2 × 2 into 2048²; larger sizes repeat that mosaic mirrored
(seamless), smaller ones crop it. It is written as a GeoTIFF at the model's 0.05 m (EPSG:32632) for the engine, so
nothing is resampled, and as an ``.npy`` array for the seed.

Machines are shared and noisy: read the ratios, each measured side by side in one run, and the load average stated
with them. ``make bench`` runs this first; without ``../shared`` or the seed's environment it prints one line saying
what is missing and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED_PYTHON = Path("/tmp/seed_venv/bin/python")
SEED_SOURCE = Path(os.environ.get("SEED_SEG", "/tmp/seed_ref/Semantic Segmentation"))
SETUP_HINT = "bash ../shared/seed_bench/setup.sh"
ARCHS = ("rsp_resnet50", "rsp_swin_t", "rsp_vitaev2_s")
SIZES = (2048, 4096)
# The four real 1024² RGB tiles (paths under ../shared/data), in mosaic order: top-left, top-right, bottom-left,
# bottom-right.
TILES = (
    "loveda/images/0.png",
    "loveda/images/2.png",
    "deepglobe/6399_crop1024_x0_y768_rgb.png",
    "swiss_drone/IMG_8733_crop1024_x256_y512_rgb.png",
)
GSD_M, EPSG = 0.05, 32632  # the imported Potsdam model's GSD: the engine reads the raster as it is
MODES = ("seed", "reference", "default")
ENGINE_FLAGS = {
    "reference": ["--blend", "reference", "--precision", "fp32"],
    "default": [],
    "exact": ["--exact", "--blend", "reference", "--precision", "fp32"],
}
GOAL_OF = {"reference": 0, "default": 1, "exact": 0}  # which of a size's GOALS each engine mode is judged by
MARGIN_QUANTILE = 0.5  # "confident" pixels: the seed's top-1 − top-2 logit margin at least its median
# The goals (ratio to the seed's slide_inference) per raster side: (reference fp32, default).
GOALS = {2048: (1.3, 2.0), 4096: (1.5, 2.5)}


def build_mosaic(tiles: Sequence[np.ndarray], size: int) -> np.ndarray:
    """A ``size``² RGB image from four equal square tiles (H, W, 3) uint8.

    The tiles go 2 × 2 (row-major); the mosaic is repeated with alternate mirroring to cover larger sizes (each
    copy meets its neighbour at a mirror line, so no new seam appears) and cropped to ``size``.
    """
    if len(tiles) != 4 or len({t.shape for t in tiles}) != 1 or tiles[0].shape[0] != tiles[0].shape[1]:
        raise ValueError(f"need four equal square tiles, got shapes {[t.shape for t in tiles]}")
    base = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    block = np.concatenate([base, base[:, ::-1]], axis=1)
    block = np.concatenate([block, block[::-1]], axis=0)  # (2s, 2s, 3), period 2s in both directions
    reps = -(-size // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, reps, 1))[:size, :size])


def ratio_of_medians(seed_s: Sequence[float], engine_s: Sequence[float]) -> float:
    """median(seed seconds) ÷ median(engine seconds): above 1 the engine is faster."""
    return statistics.median(seed_s) / statistics.median(engine_s)


def label_agreement(ours: np.ndarray, seed: np.ndarray, margin: np.ndarray, quantile: float = MARGIN_QUANTILE) -> dict:
    """Fractions of pixels where ``ours`` equals the seed's labels: over all pixels (``all``) and over the pixels
    where the seed's top-1 − top-2 logit margin is at least its ``quantile`` (``confident``, threshold in
    ``margin_threshold``, logits)."""
    if ours.shape != seed.shape or margin.shape != seed.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, seed {seed.shape}, margin {margin.shape}")
    equal = ours == seed
    threshold = float(np.quantile(margin, quantile))
    confident = margin >= threshold
    return {
        "all": float(equal.mean()),
        "differing_pixels": int(equal.size - np.count_nonzero(equal)),
        "confident": float(equal[confident].mean()),
        "margin_threshold": threshold,
        "confident_pixels": float(confident.mean()),
    }


def rotated(modes: Sequence[str], round_index: int) -> list[str]:
    """The order of one round: ``modes`` rotated by the round's index (round 0 keeps the seed first, which must run
    before the engine can import its weights)."""
    k = round_index % len(modes)
    return [*modes[k:], *modes[:k]]


def goal_note(size: int, mode: str, ratio: float) -> str:
    """``met`` / ``missed by N %`` against the issue's goal for that size and mode, or empty when it sets none."""
    if size not in GOALS or mode not in GOAL_OF:
        return ""
    goal = GOALS[size][GOAL_OF[mode]]
    return f"goal ≥ {goal}×: met" if ratio >= goal else f"goal ≥ {goal}×: missed by {100 * (1 - ratio / goal):.0f} %"


def _goal(size: int, mode: str, ratio: float) -> str:
    note = goal_note(size, mode, ratio)
    return f" ({note})" if note else ""


def missing_prerequisites(shared: Path, seed_python: Path) -> str | None:
    """What the comparison cannot run without, as one line for the user; None when everything is there."""
    script = shared / "seed_bench" / "seed_slide.py"
    if not script.exists():
        return f"{script} not found: this comparison needs ../shared/seed_bench next to the repository"
    absent = [t for t in TILES if not (shared / "data" / t).exists()]
    if absent:
        return f"the real test tiles are missing under {shared / 'data'}: {', '.join(absent)}"
    if not seed_python.exists() or not SEED_SOURCE.is_dir():
        return f"the seed's environment is missing ({seed_python}, {SEED_SOURCE}); build it with `{SETUP_HINT}`"
    return None


def write_inputs(shared: Path, size: int, work: Path) -> tuple[Path, Path]:
    """The ``size``² test image as a GeoTIFF (engine) and an ``.npy`` (seed)."""
    from osgeo import gdal, osr
    from PIL import Image

    tiles = [np.asarray(Image.open(shared / "data" / t).convert("RGB")) for t in TILES]
    rgb = build_mosaic(tiles, size)
    npy, tif = work / f"mosaic_{size}.npy", work / f"mosaic_{size}.tif"
    np.save(npy, rgb)
    ds = gdal.GetDriverByName("GTiff").Create(str(tif), size, size, 3, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((500000.0, GSD_M, 0.0, 5800000.0, 0.0, -GSD_M))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rgb[:, :, b])
    ds = None
    return tif, npy


def compare(
    arch: str, size: int, rounds: int, threads: int, shared: Path, seed_python: Path, work: Path,
    modes: Sequence[str] = MODES,
) -> dict:  # fmt: skip
    """Alternated runs of one network on one size (see the module docstring); ``modes``: ``seed`` first, then engine
    modes of :data:`ENGINE_FLAGS`."""
    engine_modes = [m for m in modes if m != "seed"]
    from osgeo import gdal

    from bench.cli_runs import timed

    tif, npy = write_inputs(shared, size, work)
    seed_dir, model = work / f"seed_{arch}_{size}", work / f"{arch}.rspmodel"
    engine_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seed_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    agreement: dict[str, list[dict]] = {m: [] for m in engine_modes}
    seed_wall: list[float] = []
    load: list[float] = []
    facts: dict[str, Any] = {}
    seed_labels = seed_margin = None
    for r in range(rounds):
        for mode in rotated(modes, r):
            load.append(os.getloadavg()[0])
            print(f"seed_compare: {arch} {size}² round {r + 1}/{rounds}: {mode}", file=sys.stderr, flush=True)
            if mode == "seed":
                script = shared / "seed_bench" / "seed_slide.py"
                cmd = [str(seed_python), str(script), arch, str(npy), str(seed_dir), "--threads", str(threads)]
                wall, _ = timed(cmd, seed_env)
                timing = json.loads((seed_dir / "seed_timing.json").read_text())
                seconds["seed"].append(float(timing["seconds"]))
                seed_wall.append(wall)
                labels = np.load(seed_dir / "seed_labels.npy")
                if seed_labels is not None and not np.array_equal(labels, seed_labels):
                    raise RuntimeError(f"the seed's labels changed between rounds ({arch}, {size}²)")
                seed_labels, seed_margin = labels, np.load(seed_dir / "seed_margin.npy")
                if not model.exists():
                    ckpt = seed_dir / f"{arch}_mmseg.pth"
                    cmd = [sys.executable, "-m", "engine", "import", str(ckpt), "--arch", arch, "--dataset", "potsdam"]
                    timed([*cmd, "--num-classes", "6", "--output", str(model), "--overwrite"], engine_env)
                continue
            out = work / f"{arch}_{size}_{mode}.tif"
            cmd = [sys.executable, "-m", "engine", "predict", "--model", str(model), "--input", str(tif)]
            cmd += ["--output", str(out), "--threads", str(threads), "--overwrite", *ENGINE_FLAGS[mode]]
            wall, events = timed(cmd, engine_env)
            seconds[mode].append(wall)
            start = next(e for e in events if e.get("event") == "start")
            if start.get("resampling_factor") not in (None, [1.0, 1.0]):
                raise RuntimeError(f"the engine resampled the test image: {start.get('resampling_factor')}")
            facts[mode] = {
                "windows": start.get("total"),
                "precision": start.get("precision"),
                "compiled": any(e.get("event") == "status" and "compiling" in e.get("message", "") for e in events),
            }
            assert seed_labels is not None and seed_margin is not None  # round 0 runs the seed first
            agreement[mode].append(label_agreement(gdal.Open(str(out)).ReadAsArray(), seed_labels, seed_margin))
            out.unlink()
    row: dict[str, Any] = {
        "arch": arch,
        "size": size,
        "windows": facts["reference"]["windows"],
        "rounds": rounds,
        "threads": threads,
        "seed_s": seconds["seed"],
        "seed_process_s": seed_wall,
        "load_average_1min": load,
    }
    for mode in engine_modes:
        worst = min(agreement[mode], key=lambda a: a["all"])
        row[mode] = {
            "flags": " ".join(ENGINE_FLAGS[mode]) or "(defaults)",
            "engine_s": seconds[mode],
            "ratio_of_medians": ratio_of_medians(seconds["seed"], seconds[mode]),
            "agreement": worst["all"],
            "differing_pixels": worst["differing_pixels"],
            "agreement_confident": worst["confident"],
            "margin_threshold": worst["margin_threshold"],
            **facts[mode],
        }
    shutil.rmtree(seed_dir, ignore_errors=True)
    return row


def equal_share(mode: dict) -> str:
    """``100.000 % (0 px differ)`` only when no pixel differs: a few differing pixels of millions are shown as
    ``< 100 %`` rather than rounded up to 100.000 %."""
    n = mode["differing_pixels"]
    share = f"{100 * mode['agreement']:.3f} %" if n == 0 or mode["agreement"] < 0.99999 else "< 100 %"
    return f"{share} ({n} px differ)"


def table(results: dict) -> str:
    """The comparison as markdown: one row per network and size."""
    lines = [
        f"Engine (whole `python -m engine predict` process) vs the seed's own `slide_inference` (alone, model built), "
        f"same weights; ratio of medians over {results['rounds']} alternated rounds, seed s ÷ engine s.",
        f"Machine: {results['machine']}; {results['threads']} threads; 1-min load average during the runs "
        f"{results['load_min']:.1f}–{results['load_max']:.1f} ({os.cpu_count()} cores).",
        "",
        "| network | raster | seed s | `--blend reference --precision fp32` s | ratio | labels = seed's "
        "| default s | ratio | labels = seed's (all / confident) | default: precision, compiled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        ref, dft = r["reference"], r["default"]
        med = statistics.median
        lines.append(
            f"| {r['arch']} | {r['size']}² ({r['windows']} win) | {med(r['seed_s']):.1f} | "
            f"{med(ref['engine_s']):.1f} | "
            f"{ref['ratio_of_medians']:.2f}×{_goal(r['size'], 'reference', ref['ratio_of_medians'])} | "
            f"{equal_share(ref)} | {med(dft['engine_s']):.1f} | "
            f"{dft['ratio_of_medians']:.2f}×{_goal(r['size'], 'default', dft['ratio_of_medians'])} | "
            f"{100 * dft['agreement']:.2f} % / {100 * dft['agreement_confident']:.2f} % | "
            f"{dft['precision']}, {'yes' if dft['compiled'] else 'no'} |"
        )
    lines += [
        "",
        "Labels = seed's: pixels equal to the seed's labels; *confident*: only where the seed's top-1 − top-2 logit "
        "margin is at least its median (random weights have near-ties).",
    ]
    exact = [r for r in results["rows"] if "exact" in r]
    if exact:
        lines += [
            "",
            "| network | raster | seed s | `--exact --blend reference --precision fp32` s | ratio | labels = seed's |",
            "|---|---|---|---|---|---|",
        ]
        for r in exact:
            ex = r["exact"]
            lines.append(
                f"| {r['arch']} | {r['size']}² ({r['windows']} win) | {statistics.median(r['seed_s']):.1f} | "
                f"{statistics.median(ex['engine_s']):.1f} | "
                f"{ex['ratio_of_medians']:.2f}×{_goal(r['size'], 'exact', ex['ratio_of_medians'])} | "
                f"{equal_share(ex)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_compare", description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="raster sides (pixels)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds per network and size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (seed_bench/, data/)")
    parser.add_argument("--seed-python", type=Path, default=SEED_PYTHON, help="the seed environment's python")
    parser.add_argument("--out", type=Path, default=Path("bench_output"))
    parser.add_argument(
        "--exact", action="store_true", help="also time --exact (the reference float order: the seed's logits exactly)"
    )
    args = parser.parse_args(argv)
    modes = (*MODES, "exact") if args.exact else MODES
    if args.rounds < 1 or any(s < 512 for s in args.sizes):
        parser.error("--rounds must be ≥ 1 and --sizes ≥ 512")
    missing = missing_prerequisites(args.shared, args.seed_python)
    if missing:
        print(f"seed_compare: skipped: {missing}", flush=True)
        return 0
    from bench.__main__ import machine_description

    rows = []
    with tempfile.TemporaryDirectory(prefix="rsp-seed-compare-") as tmp:
        for size in args.sizes:
            for arch in args.archs:
                rows.append(
                    compare(arch, size, args.rounds, args.threads, args.shared, args.seed_python, Path(tmp), modes)
                )
    loads = [x for r in rows for x in r["load_average_1min"]]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(),
        "threads": args.threads,
        "rounds": args.rounds,
        "load_min": min(loads),
        "load_max": max(loads),
        "rows": rows,
    }
    text = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_compare.json").write_text(json.dumps(results, indent=2))
    (args.out / "seed_compare.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
