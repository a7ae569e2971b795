"""``python -m bench.guided_labelling``: does labelling where ``training suggest`` points beat labelling at random?

For every labelled real scene of ../shared/data (:data:`bench.finetune_quality.SCENES`, the same georeferenced
image, the same split: labels only in the **top 60 %** of rows, the score on the **bottom 40 %**) and every seed:

1. **Start**: 8 squares of 32×32 px (``SPARSE_SIDE``) at seeded random places in the top 60 %, not overlapping,
   labelled from the reference mask (an oracle analyst), traced into polygons; ``python -m training finetune`` with
   its defaults from the bundled demo model (``--seed``).
2. **Rounds** (3 by default), two strategies from the same start:

   - *guided*: ``python -m training suggest --count 8 --size 32 --labels <the labels so far> --class-field class``
     with the last model, on a GeoTIFF of the top 60 % only (same origin and pixel size, so a square's ``col``/``row``
     are the whole image's and no square falls in the test part); the reference labels in those squares are added;
   - *random*: 8 more random squares in the top 60 %, overlapping none labelled before;

   then continued training as the plugin's *Continue training* does: a fine-tune ``--init`` the strategy's previous
   model on all its labels so far.
3. After each fine-tune, ``python -m engine predict`` on the bottom 40 % and mIoU as mmseg computes it
   (:func:`bench.finetune_quality.scores`).

Results: ``<out>/guided_labelling.json`` (rewritten after every step), a markdown table (per scene, seed and round;
then the mean over scenes, each scene first averaged over its seeds, with the seed noise of guided − random,
:func:`seed_noise`, and the same difference over the test area's classes only) and ``<out>/guided_labelling.png``
(mIoU against labelled pixels, both strategies). ``--from-json`` merges earlier runs' JSON files into one table and
plot without running anything. Goal of issue #26: guided ≥ random + 3 mIoU after the last round, averaged over the
scenes, and no scene worse than random by more than 1. Machines are shared and noisy: the CPU is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench.finetune import cpu_name, georeferenced, trace
from bench.finetune_quality import DATA, GSD, IGNORE, SCENES, SPARSE_SIDE, child, finetune, load_scene, split_row

STRATEGIES = ("guided", "random")
PX = ("gpx", "rpx")  # keys of the labelled pixels of each strategy in the means
QUICK_ARGS = "--iters 50"  # --quick without --finetune-args: 1/6 of the lite network's 300 (a loaded 2-core CPU ran
# 150 iterations in 570 s, so 7 fine-tunes of 150 would take over an hour)
MAX_TRIES = 10_000  # random places tried per square before giving up (the top 60 % is far from full)


def random_squares(taken: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` top-left corners of SPARSE_SIDE squares inside ``taken`` (the top part) overlapping no taken pixel;
    marks them taken."""
    out: list[tuple[int, int]] = []
    for _ in range(MAX_TRIES):
        if len(out) == count:
            break
        r = int(rng.integers(0, taken.shape[0] - SPARSE_SIDE + 1))
        c = int(rng.integers(0, taken.shape[1] - SPARSE_SIDE + 1))
        if not taken[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE].any():
            taken[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE] = True
            out.append((r, c))
    return out


def add_squares(labels: np.ndarray, mask: np.ndarray, squares: list[tuple[int, int]]) -> None:
    """The oracle: copy the reference ``mask`` into ``labels`` inside each square."""
    for r, c in squares:
        labels[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE] = mask[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE]


def suggest(model: str, top_raster: str, gpkg: str, count: int, folder: str, threads: int | None) -> dict[str, Any]:
    """``python -m training suggest`` in its own process: ``{"squares": [(row, col), ...], "seconds"}`` or an error."""
    cmd = [sys.executable, "-m", "training", "suggest", "--model", model, "--raster", top_raster, "--labels", gpkg,
           "--class-field", "class", "--count", str(count), "--size", str(SPARSE_SIDE), "--device", "cpu",
           "--output", os.path.join(folder, "suggestions.gpkg"), "--overwrite"]  # fmt: skip
    rc, seconds, _rss, out = child(cmd, os.path.join(folder, "suggest.log"), threads)
    events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    done = next((e for e in events if e["event"] == "done"), None)
    if rc != 0 or done is None:
        return {"error": next((e.get("message") for e in events if e["event"] == "error"), f"exit {rc}")}
    return {"squares": [(s["row"], s["col"]) for s in done["suggestions"]], "seconds": seconds}


def train_round(
    ctx: dict[str, Any], labels: np.ndarray, folder: str, init: str | None, seed: int
) -> dict[str, Any]:  # fmt: skip
    """Trace ``labels``, fine-tune (from ``init``, else the demo), predict and score the test part."""
    os.makedirs(folder, exist_ok=True)
    names = ctx["names"]
    gpkg = trace(georeferenced(labels, os.path.join(folder, "labels.tif"), GSD, IGNORE),
                 os.path.join(folder, "labels.gpkg"), tuple(names))  # fmt: skip
    extra = list(ctx["extra"]) + (["--init", init] if init else [])  # argparse keeps the last --init given
    result = finetune(ctx["raster"], gpkg, names, ctx["test_rows"], ctx["test"], folder, seed, extra, ctx["threads"])
    keep = ("mIoU", "OA", "iou", "seconds", "predict_seconds", "iterations", "error")
    return {
        "labelled_px": int((labels < len(names)).sum()),
        **{k: result[k] for k in keep if k in result},
        "model": os.path.join(folder, "model.rspmodel"),
        "gpkg": gpkg,
    }


def run_seed(scene_name: str, seed: int, args: argparse.Namespace, tmp: str, record: Any) -> None:
    """The start and every round of both strategies for one scene and seed; ``record(row)`` after each step."""
    scene = SCENES[scene_name]
    image, mask, names = load_scene(scene)
    top = split_row(mask.shape[0])
    folder = os.path.join(tmp, scene_name)
    os.makedirs(folder, exist_ok=True)
    ctx = {
        "names": names,
        "raster": georeferenced(image, os.path.join(folder, "image.tif"), GSD),
        "test_rows": slice(top, mask.shape[0]),
        "test": mask[top:],
        "extra": args.finetune_args.split(),
        "threads": args.threads,
    }
    top_raster = os.path.join(folder, "top.tif")
    if not os.path.exists(top_raster):
        georeferenced(image[:top], top_raster, GSD)  # same origin and pixel size as image.tif
    rng = np.random.default_rng(seed)
    taken = np.zeros((top, mask.shape[1]), bool)
    labels = np.full(mask.shape, IGNORE, np.uint8)
    add_squares(labels, mask, random_squares(taken, args.per_round, rng))
    base = {"scene": scene_name, "seed": seed}
    start = train_round(ctx, labels, os.path.join(folder, f"seed{seed}", "start"), None, seed)
    record({**base, "round": 0, "strategy": "start", "squares": args.per_round, **start})
    state = {s: (labels.copy(), taken.copy(), start) for s in STRATEGIES}
    for rnd in range(1, args.rounds + 1):
        for strategy in STRATEGIES:
            own, own_taken, last = state[strategy]
            if "error" in last:
                continue
            step = os.path.join(folder, f"seed{seed}", f"{strategy}{rnd}")
            os.makedirs(step, exist_ok=True)
            extra: dict[str, Any] = {}
            if strategy == "guided":
                found = suggest(last["model"], top_raster, last["gpkg"], args.per_round, step, args.threads)
                if "error" in found:
                    record({**base, "round": rnd, "strategy": strategy, "error": f"suggest: {found['error']}"})
                    state[strategy] = (own, own_taken, found)
                    continue
                squares = found["squares"]
                for r, c in squares:
                    own_taken[r : r + SPARSE_SIDE, c : c + SPARSE_SIDE] = True
                extra["suggest_seconds"] = found["seconds"]
            else:
                squares = random_squares(own_taken, args.per_round, np.random.default_rng([seed, rnd]))
            add_squares(own, mask, squares)
            result = train_round(ctx, own, step, last["model"], seed)
            record({**base, "round": rnd, "strategy": strategy, "squares": len(squares), **extra, **result})
            state[strategy] = (own, own_taken, result)


def classes_in_test_area(names: list[str]) -> dict[str, list[int]]:
    """Per scene, the class ids present in the reference of the test part (the bottom 40 % of rows); a scene whose
    files are not in ../shared/data (a clone elsewhere, merging runs with ``--from-json``) is left out."""
    out = {}
    for name in names:
        if not os.path.exists(os.path.join(DATA, SCENES[name].mask)):
            continue
        _, mask, _ = load_scene(SCENES[name])
        test = mask[split_row(mask.shape[0]) :]
        out[name] = [int(k) for k in np.unique(test) if k != IGNORE]
    return out


def mean_iou_over(iou: list[float | None], classes: list[int]) -> float:
    """The mean of the per-class IoU (in %, as the rows hold it) over ``classes`` only (undefined counts 0)."""
    return float(np.mean([iou[k] or 0.0 for k in classes]))


def table(rows: list[dict[str, Any]], test_classes: dict[str, list[int]] | None = None) -> tuple[str, dict[str, Any]]:
    """The markdown table and the mean over scenes per round (each scene first averaged over its seeds).

    With ``test_classes`` (:func:`classes_in_test_area`), each round's means also carry ``delta_test_classes``: guided −
    random when the mean IoU is taken over the classes present in the test reference only, not mmseg's classes
    present *or predicted*: how much of a difference comes from predicting classes the test area lacks.
    """
    by = {(r["scene"], r["seed"], r["round"], r["strategy"]): r for r in rows}
    lines = ["| scene | seed | round | labelled px (guided / random) | guided mIoU | random mIoU | guided − random |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    per_scene: dict[tuple[str, int], dict[str, list[float]]] = {}
    for scene, seed, rnd, strategy in sorted(by, key=lambda k: (list(SCENES).index(k[0]), k[1], k[2])):
        if strategy not in ("start", "guided"):
            continue
        got = {s: by.get((scene, seed, rnd, "start" if rnd == 0 else s), {}) for s in STRATEGIES}
        miou = {s: got[s].get("mIoU") for s in STRATEGIES}
        px = " / ".join(str(got[s].get("labelled_px", "-")) for s in STRATEGIES)
        cells = [f"{miou[s]:.1f}" if miou[s] is not None else got[s].get("error", "-") for s in STRATEGIES]
        delta = f"{miou['guided'] - miou['random']:+.1f}" if None not in miou.values() else "-"
        lines.append(f"| {scene} | {seed} | {rnd} | {px} | {cells[0]} | {cells[1]} | {delta} |")
        if None not in miou.values():
            acc = per_scene.setdefault((scene, rnd), {k: [] for k in (*STRATEGIES, *PX)})
            for s, key in zip(STRATEGIES, PX, strict=True):
                acc[s].append(miou[s])
                acc[key].append(got[s]["labelled_px"])
            if test_classes is not None and scene in test_classes and all("iou" in got[s] for s in STRATEGIES):
                g, r = (mean_iou_over(got[s]["iou"], test_classes[scene]) for s in STRATEGIES)
                acc.setdefault("test_classes_delta", []).append(g - r)
    means: dict[str, Any] = {}
    for rnd in sorted({r for _, r in per_scene}):
        scenes = {s: {k: float(np.mean(v)) for k, v in acc.items()} for (s, r), acc in per_scene.items() if r == rnd}
        mean = {k: round(float(np.mean([v[k] for v in scenes.values()])), 2) for k in ("guided", "random", *PX)}
        worst = min(v["guided"] - v["random"] for v in scenes.values())
        deltas = [np.subtract(acc["guided"], acc["random"]) for (_, r), acc in per_scene.items() if r == rnd]
        means[str(rnd)] = {**mean, "scenes": len(scenes), "worst_scene_delta": round(worst, 2), **seed_noise(deltas),
                           "per_scene": scenes}  # fmt: skip
        restricted = [v["test_classes_delta"] for v in scenes.values() if "test_classes_delta" in v]
        if restricted:
            means[str(rnd)]["delta_test_classes"] = round(float(np.mean(restricted)), 2)
    lines += ["", "| round | scenes | mean labelled px (guided / random) | guided mIoU | random mIoU | guided − random "
              "| ± seed noise (SE) | runs ahead | worst scene |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    if test_classes is not None:
        lines[-2] += " guided − random, test-area classes only |"
        lines[-1] += "---|"
    for rnd, m in means.items():
        se = "-" if m["delta_se"] is None else f"{m['delta_se']:.1f}"
        only = ""  # the test-area column, when asked for
        if test_classes is not None:
            only = f" {m['delta_test_classes']:+.1f} |" if "delta_test_classes" in m else " - |"
        lines.append(f"| {rnd} | {m['scenes']} | {m['gpx']:.0f} / {m['rpx']:.0f} | {m['guided']:.1f} | "
                     f"{m['random']:.1f} | {m['guided'] - m['random']:+.1f} | {se} | {m['ahead']} of {m['runs']} | "
                     f"{m['worst_scene_delta']:+.1f} |{only}")  # fmt: skip
    return "\n".join(lines), means


def seed_noise(deltas: list[np.ndarray]) -> dict[str, Any]:
    """How far seed noise alone moves the mean over scenes of guided − random (each scene averaged over its seeds).

    ``deltas`` holds one array per scene, guided − random at each of its seeds. The spread between seeds is pooled
    over the scenes run at two seeds or more (a scene's own two or three values say little about it alone); the
    standard error of the mean over scenes is then ``sqrt(pooled variance × Σ 1/seeds) / scenes``. ``None`` when no
    scene has two seeds. Also: how many scene-seed runs end with guided ahead, out of how many.
    """
    squares = sum(float(((d - d.mean()) ** 2).sum()) for d in deltas)
    dof = sum(len(d) - 1 for d in deltas)
    se = np.sqrt(squares / dof * sum(1 / len(d) for d in deltas)) / len(deltas) if dof else None
    return {"delta_se": None if se is None else round(float(se), 2), "ahead": int(sum((d > 0).sum() for d in deltas)),
            "runs": sum(len(d) for d in deltas)}  # fmt: skip


def plot(means: dict[str, Any], path: str, title: str) -> None:
    """mIoU against labelled pixels: a thin line per scene (mean over seeds), a thick one for the mean over scenes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    rounds = sorted(means, key=int)
    colours = {"guided": "tab:blue", "random": "tab:orange"}
    scenes = sorted({s for m in means.values() for s in m["per_scene"]})
    for strategy, px in zip(STRATEGIES, PX, strict=True):
        for scene in scenes:
            pts = [means[r]["per_scene"][scene] for r in rounds if scene in means[r]["per_scene"]]
            if len(scenes) > 1:
                ax.plot([p[px] for p in pts], [p[strategy] for p in pts], color=colours[strategy], lw=0.7, alpha=0.4)
        ax.plot([means[r][px] for r in rounds], [means[r][strategy] for r in rounds], "o-", color=colours[strategy],
                lw=2, label=f"{strategy} (mean over {len(scenes)} scene{'s' * (len(scenes) > 1)})")  # fmt: skip
    ax.set_xlabel("labelled pixels (top 60 % of the scene)")
    ax.set_ylabel("mIoU on the bottom 40 % (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the scenes and seeds asked for; print the tables; write the JSON and the plot."""
    p = argparse.ArgumentParser(prog="python -m bench.guided_labelling", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_output")
    p.add_argument("--scenes", nargs="*", choices=list(SCENES), help="default: all")
    p.add_argument("--seeds", nargs="*", type=int, help="default: 0 1 2 (0 with --quick)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=8, help="squares at the start and added per round")
    p.add_argument("--quick", action="store_true", help=f"loveda0, seed 0, and '{QUICK_ARGS}' unless given")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the child processes (default: torch's)")
    p.add_argument("--finetune-args", help="extra finetune options, e.g. '--iters 150'")
    p.add_argument("--keep", help="keep the rasters, labels, models and logs in this folder")
    p.add_argument("--from-json", nargs="+", metavar="JSON", help="run nothing: the tables and the plot over the rows "
                   "of these guided_labelling.json files (runs of other seeds or scenes, merged)")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.scenes = args.scenes or ["loveda0"]
        args.finetune_args = QUICK_ARGS if args.finetune_args is None else args.finetune_args
    args.finetune_args = args.finetune_args or ""
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = args.scenes or list(SCENES)
    import torch

    cpu = cpu_name()
    print(f"CPU: {cpu}; torch {torch.__version__}; threads {args.threads or 'default'}; "
          f"finetune args {args.finetune_args!r}", flush=True)  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "guided_labelling.json")
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def record(row: dict[str, Any]) -> None:
        rows.append({k: v for k, v in row.items() if k not in ("model", "gpkg")})
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu, "args": vars(args), "rows": rows}, f, indent=1)
        shown = ("scene", "seed", "round", "strategy", "labelled_px", "mIoU", "seconds", "suggest_seconds", "error")
        print(json.dumps({k: row[k] for k in shown if k in row}), flush=True)

    if args.from_json:
        cpus = set()
        for path in args.from_json:
            with open(path, encoding="utf-8") as f:
                run = json.load(f)
            rows += run["rows"]
            cpus.add(run["cpu"])
        names = [n for n in SCENES if any(r["scene"] == n for r in rows)]
        cpu = "; ".join(sorted(cpus))  # the runs' CPUs, not this one's
        args.seeds = sorted({int(r["seed"]) for r in rows})
    else:
        with tempfile.TemporaryDirectory() as tmpdir:
            for name in names:
                for seed in args.seeds:
                    run_seed(name, seed, args, args.keep or tmpdir, record)
    text, means = table(rows, classes_in_test_area(names))
    wall = time.monotonic() - t0
    fts = [r["seconds"] for r in rows if "seconds" in r]
    sugg = [r["suggest_seconds"] for r in rows if "suggest_seconds" in r]
    summary = {"wall_seconds": round(wall), "finetune_seconds_mean": round(float(np.mean(fts)), 1) if fts else None,
               "suggest_seconds_mean": round(float(np.mean(sugg)), 1) if sugg else None, "means": means}  # fmt: skip
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"cpu": cpu, "args": vars(args), "rows": rows, "summary": summary}, f, indent=1)
    print(text)
    if means:
        last = means[max(means, key=int)]
        met = last["guided"] - last["random"] >= 3 and last["worst_scene_delta"] >= -1
        print(f"goal (guided ≥ random + 3 after round {max(means, key=int)}, no scene below random by > 1): "
              f"{'met' if met else 'not met'}")  # fmt: skip
        scenes = ", ".join(names) if len(names) <= 3 else f"{len(names)} scenes"
        title = f"{scenes}; seeds {' '.join(map(str, args.seeds))}; {args.finetune_args or 'default iters'}\n{cpu}"
        plot(means, os.path.join(args.out, "guided_labelling.png"), title)
    print(f"{wall:.0f} s; fine-tune {summary['finetune_seconds_mean']} s each, "
          f"suggest {summary['suggest_seconds_mean']} s each; written {json_path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
