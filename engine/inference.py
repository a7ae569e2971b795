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
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from engine import compile_plan, options, precision
from engine.blending import check_blend, window_weight
from engine.compile_child import warm_in_child
from engine.compile_plan import COMPILE_AUTO_MIN_WINDOWS, Decision
from engine.errors import CancelledError, ParameterError
from engine.model_file import ModelInfo, load_model_file
from engine.models.folding import fold_batchnorm
from engine.models.segmentor import UperNet
from engine.request import RunContext
from engine.tiling import axis_spans

__all__ = ["COMPILE_AUTO_MIN_WINDOWS", "CompiledBatches", "WindowRunner", "compile_for_run", "run_windows"]

log = logging.getLogger(__name__)

COMPILE_MODES = options.COMPILE_MODES
ABANDON_POLL_S = 0.05  # how often a waiting run looks at its cancel event


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
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batch: np.ndarray,
    device: torch.device,
    precision_name: str = "fp32",
) -> np.ndarray:
    """``(B, C, t, t)`` float32 numpy inputs → ``(B, K, t, t)`` float32 numpy logits, under ``inference_mode``.

    ``precision_name`` ``"bf16"`` runs the forward under bfloat16 autocast (:mod:`engine.precision`); the logits
    come back as float32 either way, so blending accumulates in float32.
    """
    with torch.inference_mode(), precision.autocast(precision_name, device.type):
        x = torch.from_numpy(batch).to(device, non_blocking=True)
        return forward_logits(model, x).float().cpu().numpy()


T = TypeVar("T")
_abandoned: list[threading.Thread] = []
POOL_WARMUP_ELEMENTS = 1 << 20  # large enough for torch to split the op over its intra-op threads
_pool_ready = False


def init_intra_op_pool() -> None:
    """Run one small parallel torch op on the calling thread (once per process), so that torch's intra-op (OpenMP)
    pool is first set up from it rather than from a worker thread.

    :func:`call_abandonable` calls it before it starts its first worker. Measured 2026-12-03 (Intel Xeon, 2
    cores, torch 2.13 CPU, other processes busy): when the process's first parallel op ran on a worker thread (the
    network loaded by ``call_abandonable``), every later forward pass on the per-batch worker threads was about 10×
    slower: 0.5 s against 0.05 s per 256² window of the demo network, and 93 s against 7.8 s for a 2048² run. One
    parallel op on the main thread first (this, ≈ 1 ms) removes the difference.
    """
    global _pool_ready
    if not _pool_ready:
        torch.zeros(POOL_WARMUP_ELEMENTS).add_(1.0)
        _pool_ready = True


def call_abandonable(fn: Callable[[], T], cancel: threading.Event | None, what: str = "rsp-work") -> T:
    """``fn()`` run in a daemon thread while this one watches ``cancel``; the way a run stops within a second or two
    whatever torch is doing (loading, compiling for a minute, a long forward): C++ code cannot be interrupted, so on
    cancel the thread is left to finish on its own and :class:`CancelledError` is raised here at once.

    Thread-local torch state (``inference_mode``, autocast) must be set inside ``fn``. A command-line process that
    abandoned work exits without waiting for it (:func:`abandoned_work`).

    Raises:
        CancelledError: ``cancel`` was set before ``fn`` returned. Anything ``fn`` raised.
    """
    if cancel is None:
        return fn()
    init_intra_op_pool()  # on this thread first: torch work started from a worker thread runs ~10x slower
    result: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc
        finally:
            finished.set()

    worker = threading.Thread(target=target, name=what, daemon=True)
    worker.start()
    while not finished.wait(ABANDON_POLL_S):
        if cancel.is_set():
            _abandoned.append(worker)
            raise CancelledError("cancelled")
    if "error" in result:
        raise result["error"]
    return result["value"]


def abandoned_work() -> bool:
    """Whether work left behind by :func:`call_abandonable` is still running (the CLI then exits at once)."""
    return any(t.is_alive() for t in _abandoned)


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


def compile_decision(mode: str, model: torch.nn.Module, n_windows: int, entry: dict[str, Any] | None) -> Decision:
    """Whether a run of ``n_windows`` windows compiles, per ``--compile`` ``mode``.

    ``on`` always, ``off`` never; ``auto`` on CPU with a C++ compiler when the expected saving beats the compile cost
    (:func:`engine.compile_plan.decide` with the key's recorded ``entry``), never on other devices.

    Raises:
        ValueError: unknown ``mode``, or ``on`` without a C++ compiler on CPU.
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    check_compile_mode(mode, on_cpu)
    if mode != "auto":
        return Decision(mode == "on", f"--compile {mode}")
    if not on_cpu:
        return Decision(False, "--compile auto compiles on CPU only")
    if not cpp_compiler():
        return Decision(False, "no C++ compiler (g++)")
    return compile_plan.decide(n_windows, entry)


def compile_for_run(
    model: torch.nn.Module, mode: str, n_windows: int, batch_size: int, entry: dict[str, Any] | None = None
) -> torch.nn.Module | CompiledBatches:
    """The model to run ``n_windows`` windows with, compiled or not per :func:`compile_decision`.

    Compiled and eager outputs differ only in float rounding (max |Δlogit| ≈ 2e-7 measured); a run with ``auto`` may
    compile a whole raster and not a small sub-extent, so their labels are then equal up to that rounding.

    Raises:
        ValueError: unknown ``mode``, or ``on`` without a C++ compiler on CPU.
    """
    decision = compile_decision(mode, model, n_windows, entry)
    if not decision.compile:
        return model
    log.info("compiling the network for batches of %d (%s)", batch_size, decision.reason)
    return CompiledBatches(model, batch_size)


class WindowRunner:
    """Runs a run's batches of windows: precision, optional compilation, cancellation, and timing.

    Each batch runs through :func:`call_abandonable`, so a cancel ends the run within
    :data:`ABANDON_POLL_S` whatever phase the network is in (the first compiled batch compiles for up to two
    minutes). It times the batches and, at :meth:`record`, stores the per-window times and the compile cost in the
    compile measurements (:mod:`engine.compile_plan`) that the next ``--compile auto`` decision reads.

    Args:
        model: the eager network.
        device: its torch device.
        precision_name: ``"fp32"`` or ``"bf16"`` (resolved, see :func:`engine.precision.resolve_precision`).
        mode: ``--compile`` value.
        n_windows: windows the run will compute (for the ``auto`` decision).
        batch_size: full batch size.
        key: :func:`engine.compile_plan.graph_key` of this network and run (None: nothing read or recorded).
        cancel: the run's cancel event.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        precision_name: str,
        mode: str,
        n_windows: int,
        batch_size: int,
        key: str | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.model, self.device, self.precision, self.batch_size = model, device, precision_name, batch_size
        self.key, self.cancel = key, cancel
        self.entry = compile_plan.read_registry().get(key, {}) if key else {}
        self.decision = compile_decision(mode, model, n_windows, self.entry)
        self.net: torch.nn.Module | CompiledBatches = model
        if self.decision.compile:
            log.info("compiling the network for batches of %d (%s)", batch_size, self.decision.reason)
            self.net = CompiledBatches(model, batch_size)
        self.first_compiled_s: float | None = None
        self.best: dict[str, float] = {}
        self.cache_warm = self.decision.warm

    def stay_eager(self) -> None:
        """Run every batch eagerly (compiling failed elsewhere)."""
        self.net = self.model

    @property
    def compiling(self) -> bool:
        """Whether full batches run through ``torch.compile``."""
        return isinstance(self.net, CompiledBatches)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(B, K, t, t)`` of the ``(B, C, t, t)`` inputs.

        Raises:
            CancelledError: the run was cancelled meanwhile.
        """
        t0 = time.perf_counter()
        out = call_abandonable(lambda: run_windows(self.net, batch, self.device, self.precision), self.cancel)
        seconds = time.perf_counter() - t0
        full = len(batch) == self.batch_size
        compiled = isinstance(self.net, CompiledBatches) and self.net.compiled is not None and full
        if compiled and self.first_compiled_s is None:
            self.first_compiled_s = seconds
        elif full:
            name = "compiled_s" if compiled else "eager_s"
            self.best[name] = min(self.best.get(name, float("inf")), seconds / len(batch))
        return out

    def record(self) -> None:
        """Store this run's measurements (:func:`engine.compile_plan.record`); never raises for a file problem."""
        if not self.key:
            return
        measured: dict[str, float | None] = {}
        if self.compiling:
            measured["compiled_s"] = self.best.get("compiled_s")
            if (
                self.first_compiled_s is not None
                and isinstance(self.net, CompiledBatches)
                and self.net.compiled is not None
            ):
                per_batch = self.best.get("compiled_s", 0.0) * self.batch_size
                cost = max(self.first_compiled_s - per_batch, 0.1)
                measured["warm_compile_s" if self.cache_warm else "cold_compile_s"] = cost
        else:
            measured["eager_s"] = self.best.get("eager_s")
        compile_plan.record(self.key, **measured)


def window_runner(ctx: RunContext, model: torch.nn.Module, device: torch.device, n_windows: int) -> WindowRunner:
    """The run's :class:`engine.inference.WindowRunner`: precision, and compilation when it pays off.

    A compilation with a cold compiler cache runs in a child process first
    (:func:`engine.compile_child.warm_in_child`), so a cancel during those 1-2 minutes ends the run at once; the run
    then compiles from the warm cache.
    """
    from engine import events
    from engine.compile_plan import graph_key

    req, info = ctx.request, ctx.info
    precision = ctx.precision_for(device)
    batch_size = req.windows_per_pass
    key = graph_key(info.arch, info.num_classes, ctx.tile, batch_size, precision, req.exact, device.type)
    runner = WindowRunner(model, device, precision, req.compile, n_windows, batch_size, key, ctx.cancel)
    if runner.compiling:
        took = "≈ 10 s from the compiler cache" if runner.decision.warm else "1-2 min the first time"
        ctx.emit(events.STATUS, message=f"compiling the network ({took}; {runner.decision.reason})")
        if not runner.decision.warm:
            threads = req.threads or torch.get_num_threads()
            warm = warm_in_child(
                req.model,
                device=str(device),
                batch_size=batch_size,
                precision=precision,
                tile=ctx.tile,
                exact=req.exact,
                threads=threads,
                cancel=ctx.cancel,
            )
            if warm:
                runner.cache_warm = True
            else:
                runner.stay_eager()
    return runner


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


def prepare_network(model: UperNet, *, exact: bool = False) -> UperNet:
    """Make a segmentor in eval mode compute as ``engine predict`` computes; returns ``model`` (changed in place).

    ``exact``: the reference float order (RSP/mmseg's logits bit for bit). Otherwise the decode head's low-resolution
    fusion and BatchNorm folded into the convs (:func:`engine.models.folding.fold_batchnorm`): the same function,
    faster, floats rounded in another order. Anything that must reproduce the engine's labels (e.g. the fine-tuning
    hold-out) prepares its network with this.
    """
    model.set_lowres_fusion(not exact)
    if not exact:
        fold_batchnorm(model)
    return model


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
        exact: keep the reference float order (else the decode head's low-resolution fusion and BatchNorm folded
            into the convs, :func:`engine.models.folding.fold_batchnorm`: the same function, faster, floats rounded
            in another order).
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
    prepare_network(model, exact=exact)
    try:
        check_compile_mode(compile_mode, chosen.type == "cpu")
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc
    return model, chosen
