"""Every choice, default and limit of the engine's run options, stated once (standard library only).

The predict, batch and warmup command lines (:mod:`engine.cli`, :mod:`engine.batch`, :mod:`engine.warmup`), the
request (:mod:`engine.request`), and the QGIS plugin's dialogs and Processing algorithms build their choices from
here, so they cannot drift apart (``tests/engine/test_options.py`` checks that they offer the same values).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

BATCH_SIZE = 4  # windows per forward pass


def batch_size_for(value: int | None, exact: bool) -> int:
    """``--batch-size``: ``value`` when given, else (None) the default: 1 with ``--exact``, else :data:`BATCH_SIZE`.

    ``--exact`` promises the reference's logits, and the reference runs one window at a time: oneDNN picks other
    kernels for other batch sizes, which round differently (measured: RSP-ViTAEv2-S, one 512² window, bit-identical
    at batch 1, max |Δlogit| 0.047 at batches 2 and 5), so an exact run keeps batch 1 unless asked otherwise. On the
    2-core Xeon measured, a 2048² ViTAEv2-S ``--exact`` run took 48.7 s at batch 1 and 49.3 s at the pass size of 4.
    """
    return value if value is not None else (1 if exact else BATCH_SIZE)


COMPILE_MODES = ("auto", "on", "off")  # torch.compile: by expected saving, always, never
COMPILE_DEFAULT = "auto"
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where native and measured ≥ 99.5 % equal to fp32 (engine.precision)
PRECISION_DEFAULT = "auto"
BLEND_MODES = ("smooth", "reference")  # engine.blending
BLEND_DEFAULT = "smooth"
GSD_MODEL, GSD_NATIVE = "model", "native"  # the named --gsd choices (or metres)
MIN_TILE = 32  # the networks downsample by 32
MAX_TILE = 8192  # one window's logits must fit in memory
OUTPUT_SUFFIXES = {
    "labels": "_classes.tif",
    "vector": "_polygons.gpkg",
    "confidence": "_confidence.tif",
    "uncertainty": "_uncertainty.tif",
}
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".ecw", ".sid", ".nc", ".hdf")


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` → ``(1, 2, 3)`` for argparse (``--bands``)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def float_list(n: int) -> Callable[[str], tuple[float, ...]]:
    """An argparse type: ``n`` comma-separated numbers (``--bbox``, ``--window``)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}") from exc
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return values

    return parse


def add_window_options(p: argparse.ArgumentParser, *, blend: bool = True, compile: bool = True) -> None:
    """The options that shape how windows run, shared by predict, batch and warmup: ``--batch-size``, ``--blend``,
    ``--compile``, ``--precision`` and ``--exact`` (warmup: no ``--blend`` or ``--compile``)."""
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"windows per forward pass (default {BATCH_SIZE}; with --exact 1, the reference's one window at a time)",
    )
    if blend:
        p.add_argument(
            "--blend",
            choices=BLEND_MODES,
            default=BLEND_DEFAULT,
            help="smooth: weighted probabilities (default); reference: mmseg 0.21 mean of logits",
        )
    if compile:
        p.add_argument(
            "--compile",
            choices=COMPILE_MODES,
            default=COMPILE_DEFAULT,
            help="torch.compile the network (auto: on CPU when the expected saving beats the compile cost, "
            "1-2 min the first time, ≈ 10 s once cached; see python -m engine warmup)",
        )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=PRECISION_DEFAULT,
        help="auto: bfloat16 where the CPU/GPU computes it natively and the network's bf16 labels were measured "
        "≥ 99.5 %% equal to fp32's, else fp32 (always fp32 with --exact or --blend reference)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="compute in the reference code's float order (bit-identical logits to RSP/mmseg; ≈ 1.3× slower on CPU)",
    )
