"""Numeric precision of the forward pass: ``--precision auto|fp32|bf16``.

``bf16`` runs the network under ``torch.autocast(device, torch.bfloat16)``: convolutions and matrix products take
bfloat16 inputs and accumulate in float32 inside oneDNN/cuBLAS; normalisations, softmax and the logits stay float32,
and the engine blends windows in float32 as always. Chosen by measurement (RSP-R50, one 512² tile, fast head, 2
threads, AMD EPYC with AVX512-BF16): fp32 2.38 s, autocast 1.36 s, autocast + channels-last 1.36 s, bfloat16
weights + channels-last 1.44 s (and Swin-T cannot run with bfloat16 weights: its attention mixes dtypes), so the
engine uses plain autocast; under ``torch.compile`` the same autocast is traced into the graph.

``auto`` picks bf16 only where both hold:

- the device computes bfloat16 natively: a CPU with AMX-BF16 or AVX512-BF16 (elsewhere oneDNN emulates it, slower
  than fp32), or a CUDA device whose ``torch.cuda.is_bf16_supported()``;
- the architecture's measured label agreement between bf16 and fp32 on a *trained* model is at least
  :data:`AUTO_MIN_AGREEMENT` (``ArchSpec.bf16_agreement`` in each model file of :mod:`engine.models`, measured by
  ``python -m bench.precision``; None = not measured = fp32).

``--exact`` and ``--blend reference`` ask for the reference code's numbers, so with ``auto`` they run fp32; an
explicit ``--precision bf16`` still wins.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

from engine import options

log = logging.getLogger(__name__)

PRECISIONS = options.PRECISIONS
AUTO_MIN_AGREEMENT = 0.995  # bf16 vs fp32 labels on a trained model, per architecture
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bfloat16 arithmetic


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where that file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16).

    From ``/proc/cpuinfo`` where it exists, else from torch's own probes (``torch.cpu._is_avx512_bf16_supported``,
    ``torch.cpu._is_amx_tile_supported``) where this torch has them.
    """
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in BF16_CPU_FLAGS)
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def device_has_native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` (``"cpu"`` or ``"cuda"``) computes bfloat16 natively."""
    if device_type == "cpu":
        return cpu_has_native_bf16()
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def check_precision(precision: str) -> None:
    """Raise ValueError for a value that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve_precision(
    precision: str,
    device_type: str,
    bf16_agreement: float | None,
    *,
    exact: bool = False,
    blend: str = "smooth",
    native: bool | None = None,
) -> str:
    """The precision a run computes in: ``"fp32"`` or ``"bf16"``.

    Args:
        precision: the requested ``auto``, ``fp32`` or ``bf16``.
        device_type: ``"cpu"`` or ``"cuda"``.
        bf16_agreement: the architecture's measured bf16-vs-fp32 label agreement on a trained model (0..1), None
            when not measured.
        exact: ``--exact`` (the reference float order): ``auto`` then means fp32.
        blend: ``"reference"`` (the seed's labels): ``auto`` then means fp32.
        native: whether the device computes bf16 natively (default: :func:`device_has_native_bf16`).

    Raises:
        ValueError: an unknown ``precision``.
    """
    check_precision(precision)
    if precision != "auto":
        if precision == "bf16" and not (device_has_native_bf16(device_type) if native is None else native):
            log.warning("--precision bf16 on a %s without native bfloat16: expect it slower than fp32", device_type)
        return precision
    if exact or blend == "reference":
        return "fp32"
    if bf16_agreement is None or bf16_agreement < AUTO_MIN_AGREEMENT:
        return "fp32"
    return "bf16" if (device_has_native_bf16(device_type) if native is None else native) else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """The forward pass's context: ``torch.autocast(device_type, bfloat16)`` for ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        import torch

        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    else:
        yield
