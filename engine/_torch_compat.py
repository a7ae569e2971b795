"""Make ``import timm`` work beside a torchvision whose C++ extension cannot load.

PyPI's torchvision wheel that accepts the CPU build of torch carries a ``_C.so`` linked against CUDA libraries.
On a machine without them the extension fails to load, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with ``RuntimeError: operator torchvision::nms does not exist`` because it
registers fake kernels for ops that were never defined. timm imports ``torchvision.ops.misc``, so timm dies too.

:func:`ensure_torchvision_importable` runs before the first ``import torchvision``/``timm`` (``engine.models`` calls
it first thing). It tries to load torchvision's real extension; only if that fails does it define the two op
schemas that torchvision registers fakes for by name (``nms``, ``qnms``), without implementations. On a machine whose
torchvision loads its real ops (a CUDA build on a GPU machine), it changes nothing. Detection ops (nms, roi_align)
then raise when called; this project never calls them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

_log = logging.getLogger(__name__)

# Kept alive for the life of the process: dropping the Library object would remove the definitions again.
_fallback_library = None
_state: str | None = None  # "native", "fallback" or "absent" once decided

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def use_persistent_compile_cache() -> str:
    """Point torch.compile's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) at ``~/.cache/rsp_segmentation/inductor``
    unless the user chose one, so a compiled network stays compiled across reboots (the default is under /tmp).
    Must run before timm is imported: importing it fixes the cache folder. Returns the folder in use."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "rsp_segmentation", "inductor")
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", default)


def ensure_torchvision_importable() -> str:
    """Prepare torch so that ``import torchvision`` (and so ``import timm``) succeeds.

    Returns:
        ``"native"`` when torchvision's own extension is (or can be) loaded, ``"fallback"`` when the op schemas were
        defined here instead, ``"absent"`` when torchvision is not installed.
    """
    global _fallback_library, _state
    if _state is not None:
        return _state
    import torch

    if "torchvision" in sys.modules:  # imported already (by the caller): nothing left to prepare
        _state = "native" if _has_torchvision_ops(torch) else "fallback"
        return _state
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        _state = "absent"
        return _state
    if _has_torchvision_ops(torch):
        _state = "native"
        return _state
    package_dir = next(iter(spec.submodule_search_locations))
    extension = next(
        (
            os.path.join(package_dir, f)
            for f in sorted(os.listdir(package_dir))
            if f.startswith("_C") and f.endswith(".so")
        ),
        None,
    )
    if extension is not None:
        try:
            torch.ops.load_library(extension)
            _state = "native"
            return _state
        except (OSError, RuntimeError) as exc:
            _log.debug("torchvision extension %s does not load (%s); defining op schemas instead", extension, exc)
    _fallback_library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _fallback_library.define(schema)
    _state = "fallback"
    return _state


def _has_torchvision_ops(torch_module: Any) -> bool:
    try:
        torch_module.ops.torchvision.nms  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True
