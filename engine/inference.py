"""The torch side of the engine: device, network loading, compilation, window batches, in-memory sliding windows.

:func:`select_device` and :func:`load_network` prepare a model file's network for a run (also used by training for
the device); :func:`compile_for_run` optionally compiles it; :func:`run_windows` runs batches of windows.

:func:`slide_inference` is what training evaluation calls on whole images held in memory; the raster engine
(:mod:`engine.predict`) streams windows from GDAL instead, but both take their windows from :mod:`engine.tiling` and
their blending weights from :mod:`engine.blending`, so they agree.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.blending import check_blend, window_weight
from engine.errors import ParameterError
from engine.model_file import ModelInfo, load_model_file
from engine.tiling import axis_spans

log = logging.getLogger(__name__)

COMPILE_MODES = ("auto", "on", "off")
# ``--compile auto`` compiles runs of at least this many windows: torch.compile costs 40-120 s the first time per
# network and batch shape (≈ 6 s from the on-disk cache afterwards) and saves 0.3-0.9 s per 512² RSP window on 2 cores.
COMPILE_AUTO_MIN_WINDOWS = 256


def forward_logits(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
) -> torch.Tensor:
    """Logits of ``batch`` at its own size.

    Args:
        model: a segmentor whose ``forward((B, C, h, w))`` returns ``(B, K, h', w')`` logits (any ``h', w'``).
        batch: ``(B, C, h, w)`` normalised float tensor.

    Returns:
        ``(B, K, h, w)`` logits; resized bilinearly (``align_corners=False``, like mmseg ``encode_decode``) when the
        network returns another size.
    """
    out = model(batch)
    if isinstance(out, (tuple, list)):  # tolerate segmentors that also return auxiliary logits
        out = out[0]
    if out.shape[-2:] != batch.shape[-2:]:
        out = F.interpolate(out, size=batch.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, h, w)
    return out


@torch.no_grad()
def slide_inference(
    model: torch.nn.Module,
    image: torch.Tensor,
    tile: int,
    stride: int,
    num_classes: int,
    blend: str = "reference",
) -> torch.Tensor:
    """Sliding-window inference on images held in memory.

    Windows follow :func:`engine.tiling.axis_spans` (mmseg 0.21 rule, last window shifted back to the edge); an image
    smaller than ``tile`` along an axis is run at its own size along that axis, like mmseg (no padding).

    Args:
        model: segmentor in eval mode, ``forward((B, 3, h, w)) -> (B, K, h', w')`` logits.
        image: ``(N, C, H, W)`` normalised float tensor.
        tile: window size in pixels.
        stride: window step in pixels (``<= tile``).
        num_classes: K.
        blend: ``"reference"``: the uniform mean of window logits (exactly mmseg 0.21 ``slide_inference``), returned
            as ``(N, K, H, W)`` logits. ``"smooth"``: softmax probabilities weighted by
            :func:`engine.blending.window_weight`, returned as ``(N, K, H, W)`` probabilities (sum 1 over K).

    Returns:
        ``(N, K, H, W)`` float32 on ``image``'s device (see ``blend``).
    """
    check_blend(blend)
    n, _, h, w = image.shape
    preds = image.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    for y1, y2 in axis_spans(h, tile, stride).tolist():
        for x1, x2 in axis_spans(w, tile, stride).tolist():
            logits = forward_logits(model, image[:, :, y1:y2, x1:x2]).float()  # (N, K, y2-y1, x2-x1)
            if blend == "reference":
                preds[:, :, y1:y2, x1:x2] += logits
                count[:, :, y1:y2, x1:x2] += 1
            else:
                weight = torch.from_numpy(window_weight(y2 - y1, x2 - x1, "smooth")).to(image.device)
                preds[:, :, y1:y2, x1:x2] += torch.softmax(logits, dim=1) * weight
                count[:, :, y1:y2, x1:x2] += weight
    return preds / count


def run_windows(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], batch: np.ndarray, device: torch.device
) -> np.ndarray:
    """``(B, C, t, t)`` float32 numpy inputs → ``(B, K, t, t)`` float32 numpy logits, under ``inference_mode``."""
    with torch.inference_mode():
        x = torch.from_numpy(batch).to(device, non_blocking=True)
        return forward_logits(model, x).float().cpu().numpy()


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) needs, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


class CompiledBatches:
    """``model`` compiled with ``torch.compile`` for full batches of one shape, eager for everything else.

    Other shapes (the last, partial batch; batches thinned by nodata) and everything after a compilation failure run
    the eager module, so the run never recompiles and never fails because of the compiler.
    """

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = torch.compile(model, dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the ``(B, C, h, w)`` batch ``x`` (compiled when ``B`` is the full batch size)."""
        if self.compiled is not None and x.shape[0] == self.batch_size:
            try:
                return self.compiled(x)
            except Exception as exc:  # any compiler failure: fall back to eager, say so once
                log.warning("torch.compile failed (%s); continuing without compilation", str(exc).splitlines()[0])
                self.compiled = None
        return self.model(x)


def check_compile_mode(mode: str, on_cpu: bool) -> None:
    """Raise ValueError for an unknown ``mode``, or for ``on`` on CPU without a C++ compiler (with what to install)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "on" and on_cpu and cpp_compiler() is None:
        raise ValueError("--compile on needs a C++ compiler (g++): install one (Debian: apt install g++) or use off")


def compile_for_run(
    model: torch.nn.Module, mode: str, n_windows: int, batch_size: int
) -> torch.nn.Module | CompiledBatches:
    """The model to run ``n_windows`` windows with, compiled or not per ``mode``.

    ``auto`` compiles on CPU with a C++ compiler and at least :data:`COMPILE_AUTO_MIN_WINDOWS` windows; ``on`` always;
    ``off`` never.

    Compiled and eager outputs differ only in float rounding (max |Δlogit| ≈ 2e-7 measured); a run with ``auto`` may
    compile a whole raster and not a small sub-extent, so their labels are then equal up to that rounding.

    Raises:
        ValueError: unknown ``mode``, or ``on`` without a C++ compiler on CPU.
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    check_compile_mode(mode, on_cpu)
    if mode == "off" or (mode == "auto" and (n_windows < COMPILE_AUTO_MIN_WINDOWS or not on_cpu or not cpp_compiler())):
        return model
    log.info("compiling the network for batches of %d (first time per network: 1-2 min)", batch_size)
    return CompiledBatches(model, batch_size)


def select_device(name: str | None = None) -> torch.device:
    """The torch device for ``name``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None = CUDA when available, else CPU.

    Raises:
        ParameterError: CUDA asked for but not available, or an unknown device name.
    """
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda asked but CUDA is not available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ParameterError(f"unknown --device {name!r}; use cpu or cuda")
    return torch.device(name)


def load_network(
    path: str,
    device: str | None = None,
    *,
    threads: int | None = None,
    exact: bool = False,
    compile_mode: str = "auto",
    info: ModelInfo | None = None,
) -> tuple[torch.nn.Module, torch.device]:
    """The network of model file ``path`` in eval mode on the chosen device, ready for a run.

    Args:
        path: model file.
        device: see :func:`select_device`.
        threads: ``torch.set_num_threads`` (None: torch's default).
        exact: keep the reference float order in the decode head (else its low-resolution fusion).
        compile_mode: ``--compile`` value, checked here so that a bad one fails before any work.
        info: the file's metadata when already read (read from ``path`` otherwise).

    Returns:
        ``(model, device)``.

    Raises:
        ParameterError: bad device or compile mode. engine.model_file.ModelFileError: bad model file.
    """
    if threads:
        torch.set_num_threads(threads)
    chosen = select_device(device)
    model, _ = load_model_file(path, device=str(chosen), info=info)
    model.set_lowres_fusion(not exact)
    try:
        check_compile_mode(compile_mode, chosen.type == "cpu")
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc
    return model, chosen
