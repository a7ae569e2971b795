"""``python -m bench.precision MODEL... --raster R``: bf16 against fp32 on trained models over a real raster.

For each model file: the engine's labels with ``--precision fp32`` and ``--precision bf16`` (default blend, no
compilation) and their pixel agreement, and the largest relative logit error of bf16 over the raster's windows
(``max |bf16 − fp32| / max |fp32|`` per window, the worst window reported). These agreements are what
``ArchSpec.bf16_agreement`` records per architecture (:mod:`engine.precision`: ``auto`` uses bf16 at ≥ 99.5 %).

Random weights are no test of this (their logits are near-ties everywhere): train each network briefly first, e.g.
``python -m training finetune --arch rsp_resnet50 --raster resources/samples/potsdam_2_10_rgb.tif --labels
resources/samples/potsdam_2_10_labels.tif --classes resources/samples/potsdam_classes.json --iters 80 --tile 256
--batch-size 2 --output r50.rspmodel``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from osgeo import gdal

from engine.inference import forward_logits, prepare_network
from engine.model_file import load_model_file
from engine.precision import autocast, cpu_has_native_bf16
from engine.predict import PredictRequest, predict
from engine.tiling import axis_spans

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "samples" / "potsdam_2_10_rgb.tif"


def logit_error(model_path: str, raster: str) -> float:
    """The worst window's ``max |bf16 − fp32| / max |fp32|`` over the raster's windows (model file's tile/stride)."""
    from bench.baseline import read_normalised

    model, info = load_model_file(model_path)
    prepare_network(model)  # as engine predict runs it
    image = read_normalised(raster, info)
    _, _, h, w = image.shape
    worst = 0.0
    with torch.inference_mode():
        for y1, y2 in axis_spans(h, info.tile_size, info.stride).tolist():
            for x1, x2 in axis_spans(w, info.tile_size, info.stride).tolist():
                x = image[:, :, y1:y2, x1:x2]
                ref = forward_logits(model, x).float()
                with autocast("bf16", "cpu"):
                    low = forward_logits(model, x).float()
                worst = max(worst, float((low - ref).abs().max() / ref.abs().max()))
    return worst


def measure(model_path: str, raster: str, work: Path) -> dict[str, Any]:
    """Label agreement and logit error of bf16 against fp32 for one model file."""
    out = {}
    for name in ("fp32", "bf16"):
        path = work / f"{Path(model_path).stem}_{name}.tif"
        req = PredictRequest(model=model_path, input=raster, output=str(path), precision=name, compile="off")
        predict(req, network=None)
        out[name] = gdal.Open(str(path)).ReadAsArray()
    _, info = load_model_file(model_path)
    return {
        "model": model_path,
        "arch": info.arch,
        "agreement": float((out["fp32"] == out["bf16"]).mean()),
        "classes_present": int(np.unique(out["fp32"]).size),
        "max_relative_logit_error": logit_error(model_path, raster),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per model and a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="trained model files")
    parser.add_argument("--raster", default=str(SAMPLE), help="real raster (default: the bundled Potsdam sample)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsp-precision-") as tmp:
        for model in args.models:
            row = measure(model, args.raster, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nnative bf16 on this CPU: {cpu_has_native_bf16()}\n", file=sys.stderr)
    print("| network | bf16 vs fp32 labels | max relative logit error | classes present |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {100 * r['agreement']:.3f} % | {r['max_relative_logit_error']:.2e} "
            f"| {r['classes_present']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
