"""When ``--compile auto`` compiles: the expected saving against the compile cost, from measurements kept on disk.

``torch.compile`` costs 40–120 s the first time for a network, batch shape and precision (a *cold* cache) and
≈ 5–10 s once inductor's on-disk cache holds that graph (*warm*), and saves a fraction of each window's forward time.
So a 25-window raster is worth compiling when the cache is warm and not when it is cold.

Every run and ``python -m engine warmup`` record what they measured in a small JSON file inside the compiler's cache
folder (``TORCHINDUCTOR_CACHE_DIR``, so clearing that folder forgets the measurements too), under a key of what
determines the compiled graph (:func:`graph_key`: architecture, classes, window size, batch size, precision, head
variant, device type, torch version)::

    {"rsp_resnet50|k6|t512|b4|bf16|fast|cpu|torch 2.13.0": {"eager_s": 1.31, "compiled_s": 1.02,
                                                           "cold_compile_s": 74.0, "warm_compile_s": 6.1}}

``eager_s``/``compiled_s`` are the best seconds per window seen; the compile costs are the first compiled batch's
time less a compiled batch's. :func:`decide` then compiles when ``windows × gain > cost``:

- gain: ``eager_s − compiled_s`` when both were measured; else from the one measured, assuming compiling saves
  :data:`DEFAULT_GAIN_FRACTION` of the eager time;
- cost: ``warm_compile_s`` (default :data:`WARM_COMPILE_S`) once a compile of that key finished, else
  ``cold_compile_s`` (default :data:`COLD_COMPILE_S`);
- nothing measured for the key yet: compile runs of :data:`COMPILE_AUTO_MIN_WINDOWS` windows or more (the rule
  before measurements existed: a cold compile pays off after ≈ 256 RSP windows).

Reading or writing the file never fails a run: an unreadable file counts as empty, a failed write is logged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from engine.atomic import write_json

log = logging.getLogger(__name__)

REGISTRY_NAME = "rsp_compile_measurements.json"
COMPILE_AUTO_MIN_WINDOWS = 256
COLD_COMPILE_S = 90.0  # first compilation of an RSP network on 2 cores: 55-120 s measured
WARM_COMPILE_S = 10.0  # from inductor's on-disk cache: 5-10 s measured
DEFAULT_GAIN_FRACTION = 0.25  # compiled forward saves 20-50 % of the eager one (RSP networks, fp32 and bf16)


def registry_path() -> str:
    """The measurements file inside torch.compile's cache folder (see :mod:`engine._torch_compat`)."""
    from engine._torch_compat import use_persistent_compile_cache

    return os.path.join(use_persistent_compile_cache(), REGISTRY_NAME)


def graph_key(
    arch: str, num_classes: int, tile: int, batch_size: int, precision: str, exact: bool, device_type: str
) -> str:
    """The registry key of one compiled graph (what makes inductor compile anew when it changes)."""
    import torch

    head = "exact" if exact else "fast"
    return f"{arch}|k{num_classes}|t{tile}|b{batch_size}|{precision}|{head}|{device_type}|torch {torch.__version__}"


def read_registry() -> dict[str, dict[str, float]]:
    """All recorded measurements (empty when the file is missing or unreadable)."""
    try:
        with open(registry_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(key: str, **measured: float | None) -> None:
    """Merge ``measured`` into ``key``'s entry: per-window times keep the best, compile costs the latest.

    Keys: ``eager_s``, ``compiled_s`` (seconds per window), ``cold_compile_s``, ``warm_compile_s`` (seconds).
    """
    values = {k: float(v) for k, v in measured.items() if v is not None and v > 0}
    if not values:
        return
    path = registry_path()
    data = read_registry()
    entry = dict(data.get(key, {}))
    for name, value in values.items():
        if name in ("eager_s", "compiled_s") and name in entry:
            value = min(value, float(entry[name]))
        entry[name] = round(value, 4)
    data[key] = entry
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, data)
    except OSError as exc:
        log.debug("could not record compile measurements in %s: %s", path, exc)


@dataclass(frozen=True)
class Decision:
    """Whether to compile, and why (shown in the run's ``status`` event and the logs)."""

    compile: bool
    reason: str
    warm: bool = False
    expected_cost_s: float | None = None
    expected_saving_s: float | None = None


def decide(n_windows: int, entry: dict[str, Any] | None) -> Decision:
    """``--compile auto``'s decision for a run of ``n_windows`` windows, given its key's recorded ``entry``."""
    entry = entry or {}
    eager, compiled = entry.get("eager_s"), entry.get("compiled_s")
    warm = "cold_compile_s" in entry or "warm_compile_s" in entry
    if warm:
        cost = float(entry.get("warm_compile_s", WARM_COMPILE_S))
    else:
        cost = float(entry.get("cold_compile_s", COLD_COMPILE_S))
    if eager is not None and compiled is not None:
        gain = max(float(eager) - float(compiled), 0.0)
    elif eager is not None:
        gain = float(eager) * DEFAULT_GAIN_FRACTION
    elif compiled is not None:
        gain = float(compiled) * DEFAULT_GAIN_FRACTION / (1.0 - DEFAULT_GAIN_FRACTION)
    else:
        ok = n_windows >= COMPILE_AUTO_MIN_WINDOWS
        sign = "≥" if ok else "<"
        why = f"no measurement yet for this network; {n_windows} windows {sign} {COMPILE_AUTO_MIN_WINDOWS}"
        return Decision(ok, why, warm, cost, None)
    saving = n_windows * gain
    state = "warm" if warm else "cold"
    return Decision(
        saving > cost,
        f"expected saving {saving:.0f} s ({n_windows} windows × {gain:.2f} s) vs compile {cost:.0f} s ({state} cache)",
        warm,
        cost,
        saving,
    )
