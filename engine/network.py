"""A model file's network, ready for a run: the device (:func:`select_device`), loading (:func:`load_network`) and
the eval-time preparation every engine run applies (:func:`prepare_network`); training uses the first and the last.
"""

from __future__ import annotations

import torch

from engine.errors import ParameterError
from engine.inference import check_compile_mode
from engine.model_file import ModelInfo, load_model_file
from engine.models.folding import fold_batchnorm
from engine.models.segmentor import UperNet

__all__ = ["load_network", "prepare_network", "select_device"]


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
