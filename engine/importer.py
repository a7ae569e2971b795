"""Make model files from released checkpoints; ``python -m engine import`` and ``python -m engine info``.

``import`` reads a released mmseg 0.21 UperNet checkpoint (``{"meta", "state_dict", ...}``, as trained by RSP's
``tools/train.py``) without executing pickled code, checks every key strictly against ``--arch``, and writes a
self-describing ``.rspmodel`` (see :mod:`engine.model_file`). Class names come from the checkpoint's ``meta``
(``CLASSES``) when present, else from the dataset preset; for Potsdam the 6-name ``CLASSES`` includes clutter, which
the 5-class head never predicts, so the head's width decides how many names are kept. Provenance records the source
file name, its sha256 and the date; the original path is not stored.

``info`` prints a model file's metadata (``--json`` for machines); it needs no torch.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import sys
from typing import Any

from engine.events import EXIT_ERROR, EXIT_OK
from engine.model_file import MODEL_FILE_SUFFIX, ModelFileError, ModelInfo, read_model_info

HASH_CHUNK = 1 << 20


class ImportCheckpointError(Exception):
    """A checkpoint cannot be turned into a model file; the message says why and what to do."""


def sha256_of(path: str) -> str:
    """Hex SHA-256 of the file ``path``, read in chunks of :data:`HASH_CHUNK` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_checkpoint(
    src: str,
    dst: str,
    arch: str,
    dataset: str,
    num_classes: int | None = None,
    overwrite: bool = False,
    description: str = "",
) -> ModelInfo:
    """Convert the released UperNet checkpoint ``src`` into the model file ``dst``.

    Args:
        src: mmseg checkpoint path.
        dst: output ``.rspmodel`` path (written atomically).
        arch: one of ``engine.models.ARCHS``.
        dataset: a key of ``engine.classes.DATASET_PRESETS``.
        num_classes: head width; default: read from ``decode_head.conv_seg.weight``.
        overwrite: replace an existing ``dst``.
        description: text for the analyst (a default is written otherwise).

    Raises:
        ImportCheckpointError, engine.models.ModelError: unreadable or mismatching checkpoint, bad arguments.
    """
    from engine.classes import dataset_preset
    from engine.errors import OutputPathError
    from engine.model_file import save_model_file
    from engine.models import load_mmseg_checkpoint, read_checkpoint
    from engine.outputs import check_output_path

    try:
        check_output_path(dst, overwrite)
    except OutputPathError as exc:
        raise ImportCheckpointError(str(exc)) from exc
    try:
        preset = dataset_preset(dataset)
    except KeyError as exc:
        raise ImportCheckpointError(str(exc.args[0])) from exc
    ckpt = read_checkpoint(src)
    state = ckpt.get("state_dict", ckpt)
    if num_classes is None:
        seg = state.get("decode_head.conv_seg.weight")
        if seg is None:
            raise ImportCheckpointError(f"{src} has no decode_head.conv_seg.weight: not an UperNet checkpoint")
        num_classes = int(seg.shape[0])
    model = load_mmseg_checkpoint(src, arch, num_classes)
    raw_meta = ckpt.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    fields = preset.model_info_fields()
    names, colors = list(fields["class_names"]), list(fields["colors"])
    if isinstance(meta.get("CLASSES"), list | tuple) and len(meta["CLASSES"]) >= num_classes:
        names = [str(n) for n in meta["CLASSES"][:num_classes]]
        palette = meta.get("PALETTE")
        if isinstance(palette, list | tuple) and len(palette) >= num_classes:
            colors = [tuple(int(v) for v in c) for c in palette[:num_classes]]
    if len(names) != num_classes:
        raise ImportCheckpointError(
            f"the checkpoint's head has {num_classes} classes but the {dataset!r} preset names {len(names)}; "
            "choose the matching --dataset"
        )
    fields.update(num_classes=num_classes, class_names=names, colors=colors)
    info = ModelInfo(
        arch=arch,
        description=description
        or f"{arch} UperNet imported from a released RSP checkpoint, trained on {preset.dataset}. {preset.notes}",
        provenance={
            "source": os.path.basename(src),
            "sha256": sha256_of(src),
            "created": _dt.date.today().isoformat(),
            "tool": "python -m engine import",
            "mmseg_version": str(meta.get("mmseg_version", "")),
        },
        **fields,
    )
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("auxiliary_head.")}
    save_model_file(dst, sd, info)
    return info


def format_info(info: ModelInfo, path: str) -> str:
    """Human-readable summary of a model file."""
    lines = [
        f"model file : {path}",
        f"arch       : {info.arch}",
        f"dataset    : {info.dataset}",
        f"bands      : {', '.join(info.bands)} (values {info.value_range[0]:g}..{info.value_range[1]:g})",
        f"GSD        : {f'{info.gsd_m:g} m/px' if info.gsd_m else 'not fixed (processed at the raster resolution)'}",
        f"tile/stride: {info.tile_size}/{info.stride}",
        f"metrics    : {', '.join(f'{k} {v:g}' for k, v in info.metrics.items()) or '-'}",
        f"classes    : {info.num_classes}",
    ]
    lines += [
        f"  {i:>3} {name:<22} #{r:02x}{g:02x}{b:02x}"
        for i, (name, (r, g, b)) in enumerate(zip(info.class_names, info.colors, strict=True))
    ]
    if info.description:
        lines.append(f"about      : {info.description}")
    if info.provenance:
        lines.append("provenance : " + ", ".join(f"{k}={v}" for k, v in info.provenance.items()))
    return "\n".join(lines)


def _run_import(args: argparse.Namespace) -> int:
    from engine.models import ModelError

    out = args.output
    if not out.endswith(MODEL_FILE_SUFFIX):
        print(f"warning: model files are usually named *{MODEL_FILE_SUFFIX}", file=sys.stderr)
    try:
        info = import_checkpoint(
            args.checkpoint, out, args.arch, args.dataset, args.num_classes, args.overwrite, args.description or ""
        )
    except (ImportCheckpointError, ModelError, ModelFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(format_info(info, out))
    return EXIT_OK


def _run_info(args: argparse.Namespace) -> int:
    try:
        info = read_model_info(args.model)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        data: dict[str, Any] = json.loads(info.to_json())
        data["path"] = os.path.abspath(args.model)
        print(json.dumps(data))
    else:
        print(format_info(info, args.model))
    return EXIT_OK


def register_cli(subparsers: Any) -> None:
    """Add the ``import`` and ``info`` subcommands to the engine's argparse subparsers."""
    from engine.classes import DATASET_PRESETS

    p = subparsers.add_parser("import", help="make a model file from a released RSP UperNet checkpoint")
    p.add_argument("checkpoint", help="mmseg 0.21 checkpoint (.pth) with backbone/decode_head/auxiliary_head keys")
    p.add_argument("--arch", required=True, help="rsp_resnet50 | rsp_swin_t | rsp_vitaev2_s")
    p.add_argument("--dataset", required=True, choices=sorted(DATASET_PRESETS), help="what the model was trained on")
    p.add_argument("--output", "-o", required=True, help=f"model file to write (*{MODEL_FILE_SUFFIX})")
    p.add_argument("--num-classes", type=int, default=None, help="head width (default: read from the checkpoint)")
    p.add_argument("--description", default=None, help="text shown to the analyst")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_import)
    q = subparsers.add_parser("info", help="print a model file's metadata")
    q.add_argument("model")
    q.add_argument("--json", action="store_true", help="one JSON object on stdout")
    q.set_defaults(func=_run_info)
