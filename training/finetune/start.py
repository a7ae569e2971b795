"""Where fine-tuning starts: a model file, an RSP pretraining checkpoint, or a network from scratch.

- ``--init MODEL.rspmodel`` (an imported RSP UperNet, the demo, an earlier fine-tune): the backbone and the decode
  head are kept; the head's last 1×1 classifier keeps the start model's row for each class of the same name and
  starts fresh for new classes (:func:`_classifier_by_name`); the auxiliary head (never stored in model files)
  starts fresh. Bands, value range, mean/std follow the model.
- ``--backbone CKPT.pth [--arch A]``: an RSP pretraining checkpoint through ``engine.models.load_rsp_backbone``
  (the paper's transfer setting); without ``--arch`` the architecture is found by trying each RSP network. Inputs
  are RGB 0..255 with the ImageNet mean/std RSP pretrained with.
- none of them: the bundled start model (:func:`default_start_model`), as if it were ``--init``.
- ``--arch A`` alone: random initialisation (a warning says so), RGB 0..255 and ImageNet mean/std.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from engine.classes import RSP_MEAN, RSP_STD
from engine.errors import ParameterError
from engine.model_file import ModelFileError, ModelInfo, read_model_info

DEFAULT_BANDS = ("red", "green", "blue")
# The start of a fine-tune given none of --init/--backbone/--arch, best first: the general start model (the demo
# network fine-tuned on the labelled real scenes, `make start-model`, bench/start_model.py), else the demo network
# (lite_resnet trained on one 512² Potsdam crop). The plugin's default is the same (qgis_plugin.model_catalog).
DEFAULT_START_MODELS = ("general_lite.rspmodel", "demo_lite_potsdam.rspmodel")
# Class names whose meaning is "none of the other classes" (compared in lower case; see _classifier_by_name).
CATCH_ALL_NAMES = frozenset(
    {"background", "clutter", "other", "others", "rest", "unknown", "unclassified", "unlabelled", "unlabeled", "void"}
)


@dataclass
class Start:
    """The start network and the input facts the fine-tuned model inherits.

    Attributes:
        arch: architecture name. model: the segmentor with an auxiliary head and ``num_classes`` outputs.
        bands / value_range / mean / std: what the network reads (as in :class:`engine.model_file.ModelInfo`).
        tile: the start model's window size (default chip and window size), None when unknown.
        kind: ``"model"``, ``"backbone"`` or ``"scratch"``. head_kept: the decode head came with the start model.
        provenance: what it started from (file name and sha256).
    """

    arch: str
    model: Any
    bands: tuple[str, ...] = DEFAULT_BANDS
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = RSP_MEAN
    std: tuple[float, ...] = RSP_STD
    tile: int | None = None
    kind: str = "scratch"
    head_kept: bool = False
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


def start_info(init: str | None) -> ModelInfo | None:
    """The start model's metadata (no torch), or None."""
    if not init:
        return None
    try:
        return read_model_info(init)
    except ModelFileError as exc:
        raise ParameterError(
            str(exc), "check --init: a .rspmodel file from the model manager or an earlier run"
        ) from exc


def check_start_args(init: str | None, backbone: str | None, arch: str | None) -> None:
    """Refuse contradictory start options before anything heavy happens."""
    if init and backbone:
        info = start_info(init)
        raise ParameterError(
            f"give --init or --backbone, not both (--init is a {info.arch if info else '?'} model file)",
            "--init continues from a model file; --backbone starts from an RSP pretraining checkpoint",
        )
    if init and arch:
        info = start_info(init)
        if info is not None and info.arch != arch:
            raise ParameterError(
                f"--init {os.path.basename(init)} is a {info.arch} model but --arch says {arch}",
                f"drop --arch, or pass --arch {info.arch}",
            )
    if not (init or backbone or arch) and default_start_model() is None:
        raise ParameterError(
            "say where to start: --init MODEL.rspmodel, --backbone CKPT.pth or --arch NAME",
            f"this installation has no bundled start model ({', '.join(DEFAULT_START_MODELS)})",
        )


def default_start_model() -> str | None:
    """The bundled start model used when none of ``--init/--backbone/--arch`` is given: the first of
    :data:`DEFAULT_START_MODELS` found in ``resources/models/`` (a checkout) or ``models/`` (the plugin zip)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in DEFAULT_START_MODELS:
        for folder in (os.path.join(root, "resources", "models"), os.path.join(root, "models")):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def build_start(
    num_classes: int,
    class_names: tuple[str, ...],
    init: str | None = None,
    backbone: str | None = None,
    arch: str | None = None,
) -> Start:
    """The start network with ``num_classes`` outputs (see the module docstring)."""
    from engine.models import ARCHS, UnknownArchError, build_segmentor

    check_start_args(init, backbone, arch)
    if arch is not None and arch not in ARCHS:
        raise ParameterError(f"unknown --arch {arch!r}; valid: {', '.join(ARCHS)}")
    if init:
        return _from_model_file(init, num_classes, class_names)
    if backbone:
        return _from_backbone(backbone, arch, num_classes)
    assert arch is not None
    try:
        model = build_segmentor(arch, num_classes, aux_head=True)
    except UnknownArchError as exc:
        raise ParameterError(str(exc)) from exc
    return Start(
        arch,
        model,
        warnings=[
            f"training {arch} from scratch (random weights): expect poor results from a few polygons; start from "
            "--init MODEL.rspmodel or --backbone an RSP checkpoint"
        ],
        provenance={"start": "scratch"},
    )


def _from_model_file(path: str, num_classes: int, class_names: tuple[str, ...]) -> Start:
    from engine.importer import sha256_of
    from engine.model_file import read_state_dict
    from engine.models import build_segmentor, load_state_dict_strict

    info = start_info(path)
    assert info is not None
    state = read_state_dict(path)
    model = build_segmentor(info.arch, num_classes, aux_head=True)
    head_kept = tuple(class_names) == tuple(info.class_names)
    wanted = {k: v for k, v in state.items() if k.startswith(("backbone.", "decode_head."))}
    if not head_kept:
        wanted.update(_classifier_by_name(model, wanted, tuple(info.class_names), class_names))
    try:
        load_state_dict_strict(model, wanted, allowed_missing=("auxiliary_head.*",))
    except Exception as exc:
        raise ParameterError(f"--init {path} does not fit its own architecture {info.arch}: {exc}") from exc
    return Start(
        info.arch,
        model,
        bands=info.bands,
        value_range=info.value_range,
        mean=info.mean,
        std=info.std,
        tile=info.tile_size,
        kind="model",
        head_kept=head_kept,
        provenance={"start": os.path.basename(path), "start_sha256": sha256_of(path), "start_arch": info.arch},
    )


def _classifier_by_name(
    model: Any, state: dict[str, Any], old: tuple[str, ...], new: tuple[str, ...]
) -> dict[str, Any]:
    """The decode head's classifier (``decode_head.conv_seg``) for the classes ``new``: the start model's row for a
    class of the same name, the new network's fresh initialisation for the others.

    A catch-all class (:data:`CATCH_ALL_NAMES`: *background*, *clutter*, *other* …) is defined by what the other
    classes of its list leave over, so its name means different things in different class lists (LoveDA's
    *background* is other land; in the Swiss drone labels it is whatever none of nine classes covers). Its row is
    handed over only when every class of ``new`` is known to the start model (the same labelling scheme or a part of
    it). Measured (``bench.finetune_quality``, swiss_drone, general start of the other fold, seed 0): the handed-over
    *background* row scored IoU 0.0 on that class against 50 from a fresh row (demo start).

    Only the last 1×1 convolution depends on the classes; the rest of the decode head (pyramid pooling, FPN, fusion)
    holds features that transfer to any class set, so it is always kept (re-initialising it cost 2-3 mIoU in
    ``bench.finetune_quality`` and lost what the start model knew of shared classes such as *building* or *tree*).
    """
    fresh = model.state_dict()
    same_scheme = set(new) <= set(old)
    out = {}
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias"):
        rows = fresh[key].clone()
        for i, name in enumerate(new):
            if name in old and (name.lower() not in CATCH_ALL_NAMES or same_scheme):
                rows[i] = state[key][old.index(name)]
        out[key] = rows
    return out


def _from_backbone(path: str, arch: str | None, num_classes: int) -> Start:
    from engine.importer import sha256_of
    from engine.models import ARCHS, build_segmentor, load_rsp_backbone

    if not os.path.isfile(path):
        raise ParameterError(f"--backbone checkpoint not found: {path}")
    tried = [arch] if arch else [a for a in ARCHS if a.startswith("rsp_")]
    errors: dict[str, str] = {}
    for a in tried:
        try:
            backbone = load_rsp_backbone(path, a)
        except Exception as exc:  # the loader names missing/unexpected keys
            errors[a] = str(exc)
            continue
        model = build_segmentor(a, num_classes, aux_head=True)
        model.backbone.load_state_dict(backbone.state_dict())
        return Start(
            a, model, kind="backbone", provenance={"start": os.path.basename(path), "start_sha256": sha256_of(path)}
        )
    if arch:
        fits = [a for a in ARCHS if a.startswith("rsp_") and a != arch and _fits(path, a)]
        other = f"; it is a {fits[0]} checkpoint" if fits else ""
        raise ParameterError(
            f"--backbone {os.path.basename(path)} does not fit --arch {arch}{other} ({errors[arch][:300]})",
            f"pass --arch {fits[0]}" if fits else "pass an RSP pretraining checkpoint (rsp-*-ckpt.pth) of that arch",
        )
    raise ParameterError(
        f"--backbone {os.path.basename(path)} fits none of {', '.join(tried)}",
        "pass an RSP pretraining checkpoint (rsp-resnet-50-ckpt.pth, rsp-swin-t-ckpt.pth, rsp-vitaev2-s-ckpt.pth)",
    )


def _fits(path: str, arch: str) -> bool:
    from engine.models import load_rsp_backbone

    try:
        load_rsp_backbone(path, arch)
    except Exception:
        return False
    return True
