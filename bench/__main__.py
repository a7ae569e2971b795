"""``python -m bench``: the five CPU figures per network, measured side by side in one run.

1. machine peak: fp32 GFLOP/s of a large GEMM at the same thread count (the better of MKL and oneDNN);
2. forward efficiency: FLOPs of one 512² forward (counted with ``torch.utils.flop_counter``) ÷ measured time, as a
   fraction of (1), for the plain ``build_segmentor`` module and for the engine's path (× the overhead ratio of 3);
   and the same forward with the decode head's low-resolution fusion (fewer FLOPs for the same function);
3. engine overhead: engine end-to-end windows/s on a GeoTIFF ÷ raw batched forward windows/s on as many windows;
4. versus ``bench/baseline.py`` (a re-implementation written here after mmseg 0.21's ``slide_inference``, not the
   seed's own code; ``python -m bench.seed_compare`` compares with the seed's code): speed-up and pixel agreement
   of the engine with ``--exact --blend reference`` (the seed's floats), ``--blend reference`` (the fast head), the
   default (fast head, smooth blend) and a labelled fast mode (no window overlap);
5. peak RSS of engine runs on growing rasters (separate processes, lite network).

Machines are shared and noisy: compare ratios within one run, not absolute times between runs. ``--quick`` (the
default) uses a 1024² raster for the RSP networks (9 windows of 512/384) and 4096² for the lite network, and 2048²
and 8192² for memory; ``--full`` uses 4096² everywhere and adds 20000² to the memory figures (long).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from osgeo import gdal, osr
from PIL import Image

from bench import cli_runs
from engine.classes import POTSDAM_CLASSES as CLASSES
from engine.classes import POTSDAM_PALETTE as PALETTE
from engine.inference import CompiledBatches
from engine.model_file import ModelInfo, load_model_file, save_model_file
from engine.models import ARCHS, build_segmentor
from engine.precision import BF16_CPU_FLAGS, autocast, cpu_flags

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "potsdam" / "2_10_0_0_512_512_rgb.png"
TILE, STRIDE = 512, 384


def machine_peak(threads: int, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The best fp32 GFLOP/s of a large GEMM through either library torch uses on CPU: MKL (``torch.mm``) and
    oneDNN (a 1×1 convolution). On AMD CPUs MKL takes a slower path (≈ 200 vs ≈ 400 GFLOP/s on 2 Zen 4 cores), so
    ``torch.mm`` alone would understate the peak and overstate every efficiency."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    feat, weight = torch.randn(1, n, 32, 32, dtype=dtype), torch.randn(n, n, 1, 1, dtype=dtype)
    best = time_interleaved(
        {"mm": (lambda x: torch.mm(x, b), a), "1x1": (lambda x: F.conv2d(x, weight), feat)}, repeats
    )
    return max(2 * n**3 / best["mm"], 2 * n * n * 32 * 32 / best["1x1"]) / 1e9


def machine_description() -> str:
    """CPU model, cores, the bf16-relevant flags and torch's version (every figure is stated with them)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS, "amx_int8") if f in flags]
    return f"{name} ({os.cpu_count()} cores; {' '.join(shown) or 'flags unknown'}), torch {torch.__version__}"


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    return time_interleaved({"m": (model, x)}, repeats)["m"]


def time_interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Best time of each ``name: (callable, input)`` over ``repeats`` rounds run in turn (one warm-up each), so that
    the machine's load drifts over all variants alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn, x in variants.values():
            fn(x)
        for _ in range(repeats):
            for name, (fn, x) in variants.items():
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def make_model_file(arch: str, path: Path) -> Path:
    torch.manual_seed(0)
    model = build_segmentor(arch, 6, aux_head=False).eval()
    info = ModelInfo(
        arch=arch, num_classes=6, class_names=CLASSES, colors=PALETTE, tile_size=TILE, stride=STRIDE,
        description="benchmark: random weights",
    )  # fmt: skip
    save_model_file(path, model.state_dict(), info)
    return path


def make_raster(path: Path, size: int) -> Path:
    """A size² 3-band GeoTIFF of real Potsdam pixels, mirrored to fill (compressed, tiled)."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB")).transpose(2, 0, 1)
    tile = np.concatenate([rgb, rgb[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)  # (3, 1024, 1024) seamless
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), size, size, 3, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    )
    ds.SetGeoTransform((500000.0, 0.05, 0.0, 5800000.0, 0.0, -0.05))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds.SetProjection(srs.ExportToWkt())
    for y in range(0, size, 1024):
        rows = min(1024, size - y)
        strip = np.tile(tile[:, :rows], (1, 1, -(-size // 1024)))[:, :, :size]
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(strip[b], 0, y)
    ds = None
    return path


def engine_run(model_path: Path, raster: Path, out: Path, threads: int, **kw) -> float:  # type: ignore[no-untyped-def]
    from engine.predict import PredictRequest, predict

    t = time.perf_counter()
    predict(
        PredictRequest(model=str(model_path), input=str(raster), output=str(out), threads=threads, overwrite=True, **kw)
    )
    return time.perf_counter() - t


def n_windows(size: int, tile: int, stride: int) -> int:
    return (max(size - tile + stride - 1, 0) // stride + 1) ** 2


def bench_arch(arch: str, size: int, threads: int, peak: float, work: Path, batch: int, peak_bf16: float) -> dict:
    from bench import baseline

    model_path = make_model_file(arch, work / f"{arch}.rspmodel")
    model, info = load_model_file(model_path)
    model.set_lowres_fusion(False)  # the reference float order: what the seed computes
    x = torch.randn(batch, 3, TILE, TILE)
    flops = count_flops(model, x[:1])
    repeats = 5 if arch == "lite_resnet" else 2
    fast = copy.deepcopy(model).set_lowres_fusion(True)
    flops_fast = count_flops(fast, x[:1])
    t = time.perf_counter()
    compiled = CompiledBatches(copy.deepcopy(fast), batch)
    with torch.inference_mode():
        compiled(x)
    t_compile = time.perf_counter() - t

    def fast_bf16(inp: torch.Tensor) -> torch.Tensor:
        with autocast("bf16", "cpu"):
            return fast(inp)

    variants = {"ref": (model, x), "fast": (fast, x), "compiled": (compiled, x), "bf16": (fast_bf16, x)}
    per_tile = time_interleaved(variants, repeats)
    t_fwd, t_fwd_fast, t_fwd_compiled, t_bf16 = (per_tile[k] / batch for k in ("ref", "fast", "compiled", "bf16"))
    eff_module = flops / t_fwd / 1e9 / peak

    raster = work / f"raster_{size}.tif"
    if not raster.exists():
        make_raster(raster, size)
    windows = n_windows(size, TILE, STRIDE)
    t_raw = t_fwd * windows  # the raw batched forward's best time per tile, over as many windows
    run = functools.partial(engine_run, model_path, raster, threads=threads, batch_size=batch)
    t_exact = run(work / "exact.tif", blend="reference", exact=True)
    overhead = (windows / t_exact) / (windows / t_raw)

    t = time.perf_counter()
    base_labels = baseline.predict_labels(model, str(raster), info, TILE, STRIDE)
    t_base = time.perf_counter() - t

    def agreement(name: str) -> float:
        return float((gdal.Open(str(work / name)).ReadAsArray() == base_labels).mean())

    t_engine = run(work / "engine.tif", blend="reference")
    t_default = run(work / "default.tif")
    t_fast = run(work / "fast.tif", stride=TILE)
    t_compiled = run(work / "compiled.tif", compile="on")
    return {
        "arch": arch,
        "gflop_per_tile": flops / 1e9,
        "gflop_per_tile_fast_head": flops_fast / 1e9,
        "forward_s": t_fwd,
        "forward_fast_head_s": t_fwd_fast,
        "forward_compiled_s": t_fwd_compiled,
        "compile_s": t_compile,
        "forward_bf16_s": t_bf16,
        "efficiency_bf16": flops_fast / t_bf16 / 1e9 / peak_bf16,
        "efficiency_module": eff_module,
        "efficiency_engine": eff_module * overhead,
        "raster": size,
        "windows": windows,
        "engine_overhead": overhead,
        "baseline_s": t_base,
        "engine_exact_s": t_exact,
        "speedup_exact": t_base / t_exact,
        "labels_identical_exact": agreement("exact.tif"),
        "engine_reference_s": t_engine,
        "speedup_reference": t_base / t_engine,
        "labels_identical_reference": agreement("engine.tif"),
        "engine_default_s": t_default,
        "speedup_default_smooth": t_base / t_default,
        "agreement_default_smooth": agreement("default.tif"),
        "engine_fast_s": t_fast,
        "speedup_fast": t_base / t_fast,
        "agreement_fast": agreement("fast.tif"),
        "engine_compiled_s": t_compiled,
        "speedup_compiled": t_base / t_compiled,
        "agreement_compiled": agreement("compiled.tif"),
    }


def bench_memory(sizes: list[int], threads: int, work: Path) -> list[dict]:
    model_path = make_model_file("lite_resnet", work / "mem.rspmodel")
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for size in sizes:
        raster = make_raster(work / f"mem_{size}.tif", size)
        cmd = [sys.executable, "-m", "bench.memory_probe", str(model_path), str(raster), str(work / "mem.tif")]
        out = subprocess.run([*cmd, str(threads)], capture_output=True, text=True, env=env, check=True)
        rows.append({"raster": size, "peak_rss_mib": json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]})
        raster.unlink()
    return rows


def table(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}, {results['threads']} threads, peak {results['peak_gflops']:.1f} GFLOP/s fp32, "
        f"{results.get('peak_gflops_bf16', 0.0):.1f} GFLOP/s bf16",
        "",
        "Forward of one 512² tile, the module as built (reference float order) and with the fast head:",
        "",
        "| network | GFLOP/tile | s/tile | efficiency | fast head GFLOP | fast head s/tile | fast head speed-up "
        "| + torch.compile s/tile | speed-up | compile s | fast head bf16 s/tile | bf16 efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["archs"]:
        lines.append(
            f"| {r['arch']} | {r['gflop_per_tile']:.1f} | {r['forward_s']:.2f} | {r['efficiency_module']:.2f} | "
            f"{r['gflop_per_tile_fast_head']:.1f} | {r['forward_fast_head_s']:.2f} | "
            f"{r['forward_s'] / r['forward_fast_head_s']:.2f}× | {r['forward_compiled_s']:.2f} | "
            f"{r['forward_s'] / r['forward_compiled_s']:.2f}× | {r['compile_s']:.0f} | "
            f"{r.get('forward_bf16_s', float('nan')):.2f} | {r.get('efficiency_bf16', float('nan')):.2f} |"
        )
    lines += [
        "",
        "End to end on a GeoTIFF versus bench/baseline.py, a re-implementation after mmseg 0.21's slide_inference, "
        "not the seed's code (speed-up × and label agreement %):",
        "",
        "| network | raster | engine/raw (exact) | --exact --blend reference | --blend reference | default (smooth) "
        "| fast (stride=tile) | default + --compile on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["archs"]:
        cells = [
            f"{r[f'speedup_{key}']:.2f}× {100 * r[agree]:.2f} %"
            for key, agree in (
                ("exact", "labels_identical_exact"),
                ("reference", "labels_identical_reference"),
                ("default_smooth", "agreement_default_smooth"),
                ("fast", "agreement_fast"),
                ("compiled", "agreement_compiled"),
            )
        ]
        lines.append(
            f"| {r['arch']} | {r['raster']}² ({r['windows']} win) | {r['engine_overhead']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    if results.get("cli"):
        lines += ["", cli_runs.table(results["cli"])]
    lines += ["", "| raster (lite network) | peak RSS MiB | vs smallest |", "|---|---|---|"]
    first = results["memory"][0]["peak_rss_mib"] if results["memory"] else 1.0
    for m in results["memory"]:
        lines.append(f"| {m['raster']}² | {m['peak_rss_mib']:.0f} | {m['peak_rss_mib'] / first:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS), help="default: every registered arch"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="4096² rasters for every network and 20000² memory run")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run (lite network, small rasters)")
    parser.add_argument("--out", default="bench_output")
    parser.add_argument("--cli-size", type=int, default=2048, help="raster side of the whole CLI runs (0: skip them)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archs = ["lite_resnet"] if args.tiny else args.archs
    mem_sizes = [1024, 2048] if args.tiny else ([2048, 8192, 20000] if args.full else [2048, 8192])
    results: dict = {
        "machine": machine_description(),
        "threads": args.threads,
        "peak_gflops": machine_peak(args.threads),
        "peak_gflops_bf16": machine_peak(args.threads, dtype=torch.bfloat16),
        "archs": [],
        "cli": [],
    }
    with tempfile.TemporaryDirectory(prefix="rsp-bench-") as tmp:
        work = Path(tmp)
        for arch in archs:
            size = 1024 if args.tiny else (4096 if args.full or arch == "lite_resnet" else 1024)
            print(f"bench: {arch} on {size}²", file=sys.stderr, flush=True)
            peaks = results["peak_gflops"], results["peak_gflops_bf16"]
            results["archs"].append(bench_arch(arch, size, args.threads, peaks[0], work, args.batch_size, peaks[1]))
            if args.cli_size and (arch != "lite_resnet" or args.tiny):
                cli_size = 512 if args.tiny else args.cli_size
                print(f"bench: {arch} whole CLI runs on {cli_size}²", file=sys.stderr, flush=True)
                raster = work / f"cli_{cli_size}.tif"
                if not raster.exists():
                    make_raster(raster, cli_size)
                model_file = work / f"{arch}.rspmodel"
                results["cli"].append(cli_runs.bench_cli(arch, model_file, raster, work, args.threads, 4))
        print("bench: memory", file=sys.stderr, flush=True)
        results["memory"] = [] if args.no_memory else bench_memory(mem_sizes, args.threads, work)
    text = table(results)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    (out / "bench.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
