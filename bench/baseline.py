"""A re-implementation of mmseg 0.21's ``EncoderDecoder.slide_inference``, written here; NOT the seed's own code.

Eager float32, the whole image normalised in memory, a whole-image logit accumulator and a count map, windows of
``tile`` with step ``stride`` (the last one shifted back to the edge), logits averaged, then argmax. Written here from
the documented behaviour (RSP_SPEC §8), running the project's own networks, to check the engine's reference blending
(``tests/bench``) and to time that way of running a raster. Its timings are not the seed's: as a whole process it
took 216.9 s for a 2048² RSP-R50 run on a loaded machine (2026-12-02), where the seed's own ``slide_inference`` took
47.6-49.5 s for a 2048² image on the same machine kind, quiet (issue 25). Speed comparisons with the seed are made
by ``python -m bench.seed_compare``, which runs the seed's code itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from osgeo import gdal

from engine.model_file import ModelInfo


def read_normalised(path: str, info: ModelInfo) -> torch.Tensor:
    """The whole raster as a (1, C, H, W) float32 tensor normalised with the model's mean/std."""
    data = gdal.Open(path).ReadAsArray().astype(np.float32)  # (C, H, W)
    mean = np.asarray(info.mean, np.float32)[:, None, None]
    std = np.asarray(info.std, np.float32)[:, None, None]
    return torch.from_numpy((data - mean) / std)[None]


@torch.no_grad()
def slide_inference(
    model: torch.nn.Module, img: torch.Tensor, num_classes: int, tile: int, stride: int
) -> torch.Tensor:
    """mmseg 0.21 slide_inference: (1, C, H, W) → (1, K, H, W) averaged logits."""
    _, _, h, w = img.shape
    h_grids = max(h - tile + stride - 1, 0) // stride + 1
    w_grids = max(w - tile + stride - 1, 0) // stride + 1
    preds = img.new_zeros((1, num_classes, h, w))
    count = img.new_zeros((1, 1, h, w))
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + tile, h), min(x1 + tile, w)
            y1, x1 = max(y2 - tile, 0), max(x2 - tile, 0)
            crop_logit = model(img[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_logit, (x1, w - x2, y1, h - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def predict_labels(model: torch.nn.Module, path: str, info: ModelInfo, tile: int, stride: int) -> np.ndarray:
    """Labels (H, W) uint8 of the raster at ``path`` the seed's way."""
    logits = slide_inference(model, read_normalised(path, info), info.num_classes, tile, stride)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.baseline MODEL INPUT OUTPUT [THREADS]``: the seed's way as a whole process (timed by the
    bench from process start to exit, like ``python -m engine predict``): labels written as a GeoTIFF."""
    import sys

    from engine.model_file import load_model_file

    args = sys.argv[1:] if argv is None else argv
    model_path, raster, output = args[:3]
    if len(args) > 3:
        torch.set_num_threads(int(args[3]))
    model, info = load_model_file(model_path)
    model.set_lowres_fusion(False)  # the reference float order: what the seed computes
    labels = predict_labels(model, raster, info, info.tile_size, info.stride)
    src = gdal.Open(raster)
    out = gdal.GetDriverByName("GTiff").Create(output, src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    out.GetRasterBand(1).WriteArray(labels)
    out = None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
