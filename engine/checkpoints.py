"""Reading checkpoints without executing pickled code, strict key matching, and the model errors (``ModelError``).

Shared by ``engine.models`` (which re-exports these names) and ``training``; it needs torch but not timm, so the
training CLI imports it cheaply. ``CheckpointError`` is the one checkpoint error of both packages.

``torch.load(weights_only=True)`` reads mmseg checkpoints and plain state dicts. RSP's pretrained backbone files also
pickle the training config (a yacs ``CfgNode``) under ``"config"``, which ``weights_only`` refuses. For those,
:func:`read_checkpoint` falls back to an unpickler that resolves only tensor-rebuilding functions and plain
containers; every other global (yacs, numpy, argparse, or anything a hostile file names, such as ``os.system``) is
replaced by an inert placeholder class, so calling it constructs an empty object and runs nothing.
"""

from __future__ import annotations

import collections
import copyreg
import fnmatch
import os
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


class ModelError(Exception):
    """Base class of the model package's errors."""


class UnknownArchError(ModelError, ValueError):
    """An architecture name that is not one of ``engine.models.ARCHS``."""


class CheckpointError(ModelError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model; the message says which file and what to do.

    Raised by the engine's loaders and by ``training.checkpoint`` (which re-exports it); a ``ModelError`` for the
    engine's callers and a ``RuntimeError`` for the training CLI's.
    """


class CheckpointMismatchError(ModelError):
    """Checkpoint keys or shapes do not match the network; the message names them."""


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]  # not in typeshed; exists
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "set"): set,
    ("builtins", "tuple"): tuple,
}
for _dtype in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
    _SAFE_GLOBALS[("torch", f"{_dtype}Storage")] = getattr(torch, f"{_dtype}Storage")


class _Inert(dict[str, Any]):
    """Stands in for any class or function a checkpoint names that is not on the safe list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        return type(f"Inert_{module.replace('.', '_')}_{name}", (_Inert,), {})


class _RestrictedPickleModule:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler never resolves unknown globals."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(pickle.load)
    UnpicklingError = pickle.UnpicklingError
    __name__ = "restricted_pickle"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``.pth`` checkpoint onto the CPU without running pickled code (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or not a torch file): {exc}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors")
    return dict(obj)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    allowed_unexpected: Iterable[str] = (),
    allowed_missing: Iterable[str] = (),
) -> None:
    """Load ``state_dict`` into ``model``, refusing any mismatch not explicitly allowed.

    Args:
        model: the network.
        state_dict: tensors by key.
        allowed_unexpected: fnmatch patterns of checkpoint keys known to be unused (dropped, e.g. ``"fc.*"``).
        allowed_missing: fnmatch patterns of model keys allowed to keep their initial values (e.g. ``"norm0.*"``).

    Raises:
        CheckpointMismatchError: naming the missing, unexpected and mis-shaped keys.
    """
    allowed_unexpected, allowed_missing = tuple(allowed_unexpected), tuple(allowed_missing)
    own = model.state_dict()
    unexpected = sorted(k for k in state_dict if k not in own and not _matches(k, allowed_unexpected))
    missing = sorted(k for k in own if k not in state_dict and not _matches(k, allowed_missing))
    shapes = sorted(
        f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_listing(shapes)}")
        raise CheckpointMismatchError(
            "checkpoint does not match the network (" + "; ".join(parts) + "); check --arch and the number of classes"
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
