"""Training checkpoints: weights, optimiser, AMP scaler, iteration and every rank's RNG states.

File layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"state_dict": {...},            # segmentor weights, mmseg key names (backbone.*, decode_head.*, auxiliary_head.*)
     "optimizer": {...}, "scaler": {...} | None,
     "iter": int,                    # optimiser steps done
     "config": {...},                # TrainConfig.to_dict()
     "meta": {"CLASSES": [...], "PALETTE": [...], "iter": int},
     "rng": [{"torch": ByteTensor, "cuda": ByteTensor | None}, ...]}   # one entry per rank

Files are ``<work_dir>/iter_<n>.pth`` plus ``latest.pth`` (a copy written last), each written to a temporary name and
renamed, so an interrupted save never leaves a truncated checkpoint under a real name. mmseg 0.21 checkpoints
(``{"meta", "state_dict", "optimizer"}``) load through :func:`read_weights` too.
"""

from __future__ import annotations

import os
import shutil
import typing

import torch

from engine import faults
from engine.atomic import fsync_folder
from engine.checkpoints import CheckpointError  # the one checkpoint error of engine and training; re-exported

LATEST = "latest.pth"


def checkpoint_path(work_dir: str, iteration: int) -> str:
    """``<work_dir>/iter_<iteration>.pth``."""
    return os.path.join(work_dir, f"iter_{iteration}.pth")


def rng_state() -> dict[str, typing.Any]:
    """This process's torch RNG states (CPU and, when present, the current CUDA device)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: dict[str, typing.Any]) -> None:
    """Restore the RNG states :func:`rng_state` returned (the CUDA one only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(work_dir: str, payload: dict[str, typing.Any]) -> str:
    """Write ``payload`` as ``iter_<n>.pth`` and ``latest.pth`` atomically; returns the iter file path.

    Each file is written under a ``.tmp`` name, ``fsync``-ed and renamed, so a kill at any instruction leaves the
    previous ``latest.pth`` or the new one, each whole (``--resume`` continues from either identically); a kill
    between the two renames leaves ``latest.pth`` one checkpoint behind, which costs iterations, not correctness.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = checkpoint_path(work_dir, int(payload["iter"]))
    tmp = path + ".tmp"
    faults.point("checkpoint_write")
    torch.save(payload, tmp)
    _fsync(tmp)
    faults.point("rename")
    os.replace(tmp, path)
    tmp_latest = os.path.join(work_dir, LATEST + ".tmp")
    faults.point("checkpoint_write")
    shutil.copyfile(path, tmp_latest)
    _fsync(tmp_latest)
    faults.point("rename")
    os.replace(tmp_latest, os.path.join(work_dir, LATEST))
    fsync_folder(work_dir)
    return path


def _fsync(path: str) -> None:
    faults.point("fsync")
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def load_checkpoint(path: str) -> dict[str, typing.Any]:
    """Load a checkpoint dict without executing pickled code.

    Raises:
        CheckpointError: missing file, or a file that needs arbitrary unpickling (not made by this tool).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load {path} safely ({type(exc).__name__}: {str(exc)[:200]}); it is corrupt or holds pickled "
            "objects. Checkpoints from `python -m training train` and mmseg state dicts load; re-save others with "
            "only tensors"
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights")
    return data


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The segmentor state dict of a checkpoint (ours or mmseg's), with a DDP ``module.`` prefix stripped."""
    data = load_checkpoint(path)
    state = data.get("state_dict", data)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} has no state_dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
