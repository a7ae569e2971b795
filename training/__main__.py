"""Command line: ``python -m training COMMAND``: presets, show, train, test, export, finetune, accuracy, suggest,
convert-*.

Examples::

    python -m training convert-potsdam /data/potsdam_zips --output data/potsdam
    python -m training show upernet_rsp_swin_t_potsdam
    python -m training train upernet_rsp_swin_t_potsdam --work-dir runs/swin --load-backbone rsp-swin-t-ckpt.pth
    torchrun --nproc_per_node=2 -m training train upernet_rsp_swin_t_potsdam --work-dir runs/swin
    python -m training test upernet_rsp_swin_t_potsdam runs/swin/latest.pth --eval mIoU mFscore --show-dir runs/show
    python -m training export runs/swin/latest.pth --output swin_potsdam.rspmodel --metrics runs/swin/test/metrics.json
    python -m training finetune --raster ortho.tif --labels polygons.gpkg --class-field class --output mine.rspmodel \
        --init resources/models/demo_lite_potsdam.rspmodel
    python -m training accuracy --prediction classes.tif --reference polygons.gpkg --class-field class
    python -m training suggest --model mine.rspmodel --raster ortho.tif --labels polygons.gpkg --count 10

``finetune``, ``accuracy`` and ``suggest`` speak the engine's contract (JSON lines on stdout, exit codes 0/1/130, see
:mod:`training.finetune.cli` and :mod:`training.suggest_cli`).

Errors the user can fix are printed as one ``error: ...`` line (exit code 2), without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing

from training.config import PRESETS, ConfigError, apply_overrides, load_config

EXIT_USER_ERROR = 2


def _config(args: argparse.Namespace) -> typing.Any:
    config = load_config(args.config)
    return apply_overrides(config, args.set or [])


def cmd_presets(args: argparse.Namespace) -> int:
    """List the named presets."""
    for name, cfg in PRESETS.items():
        print(f"{name:34s} {cfg.arch:16s} {cfg.dataset:8s} {cfg.optimizer:6s} iters {cfg.max_iters}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a config as JSON."""
    print(_config(args).to_json())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a config (``torchrun`` for several processes)."""
    from training.trainer import Trainer

    config = _config(args)
    trainer = Trainer(config, args.work_dir, device=args.device, load_backbone=args.load_backbone)
    result = trainer.run(resume=args.resume)
    if trainer.info.is_main:
        last = result["last"] or {}
        print(
            f"done: iteration {result['iter']}, last loss {last.get('loss', float('nan')):.4f}; "
            f"checkpoints in {args.work_dir}"
        )
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint with sliding windows; metrics.json and the confusion matrix PNG."""
    import torch

    from training.checkpoint import read_weights
    from training.datasets import build_dataset
    from training.distributed import DistInfo
    from training.evaluate import evaluate, save_confusion_png
    from training.metrics import format_table, write_json
    from training.trainer import build_model, resolve_device

    config = _config(args)
    device = resolve_device(args.device, DistInfo())
    model = build_model(config)
    state = read_weights(args.checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("auxiliary_head.")]
    if missing or unexpected:
        from training.checkpoint import CheckpointError

        raise CheckpointError(
            f"{args.checkpoint} does not fit {config.arch}: missing {missing[:5]} unexpected {unexpected[:5]}; "
            "is the CONFIG the one it was trained with?"
        )
    model.to(device)
    dataset = build_dataset(config, args.split or config.test_split, train=False)
    out_dir = args.out_dir or os.path.join(
        os.path.dirname(os.path.abspath(args.checkpoint)),
        "test_" + os.path.splitext(os.path.basename(args.checkpoint))[0],
    )
    os.makedirs(out_dir, exist_ok=True)
    flip = True if args.aug_test else None
    with torch.inference_mode():
        summary = evaluate(model, config, dataset, device, flip=flip, show_dir=args.show_dir)
    summary["checkpoint"] = os.path.abspath(args.checkpoint)
    summary["config"] = config.name
    print(format_table(summary, args.eval))
    write_json(summary, os.path.join(out_dir, "metrics.json"))
    save_confusion_png(summary, os.path.join(out_dir, "confusion_matrix.png"))
    print(
        f"metrics: {os.path.join(out_dir, 'metrics.json')}; "
        f"confusion matrix: {os.path.join(out_dir, 'confusion_matrix.png')}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a model file from a checkpoint."""
    from training.export import export_from_cli

    info = export_from_cli(args.checkpoint, args.output, args.config, args.metrics, args.description or "")
    print(
        f"wrote {args.output}: {info.arch}, {info.num_classes} classes, "
        f"tile {info.tile_size}/{info.stride}, metrics {info.metrics}"
    )
    return 0


def cmd_convert_potsdam(args: argparse.Namespace) -> int:
    """Convert the ISPRS Potsdam archives into patches."""
    from training.convert.potsdam import convert_potsdam

    r = convert_potsdam(args.source, args.output, ortho=args.ortho, allow_missing=args.allow_missing)
    print(f"written {r.written}, already there {r.skipped}, into {args.output}")
    return 0


def cmd_convert_isaid(args: argparse.Namespace) -> int:
    """Convert DOTA images and iSAID masks into patches."""
    from training.convert.isaid import convert_isaid

    r = convert_isaid(args.source, args.output, splits=args.splits)
    print(f"written {r.written}, already there {r.skipped}, whole images {len(r.whole_images)}, into {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training`` argument parser with every sub-command."""
    p = argparse.ArgumentParser(prog="python -m training", description="Train and evaluate RSP UperNet models.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="preset name (see `presets`) or a JSON file written by `show`")
        sp.add_argument(
            "--set",
            nargs="+",
            action="extend",  # `--set a=1 b=2` and `--set a=1 --set b=2` both keep every override
            metavar="KEY=VALUE",
            help="override config fields, e.g. max_iters=1000",
        )

    sub.add_parser("presets", help="list the named presets").set_defaults(func=cmd_presets)
    sp = sub.add_parser("show", help="print a config as JSON")
    with_config(sp)
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("train", help="train (torchrun for several processes)")
    with_config(sp)
    sp.add_argument("--work-dir", required=True, help="checkpoints, log.jsonl, tf_logs/")
    sp.add_argument("--load-backbone", help="RSP pretrained backbone checkpoint (rsp-*-ckpt.pth)")
    sp.add_argument("--resume", action="store_true", help="continue from <work-dir>/latest.pth")
    sp.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("test", help="evaluate a checkpoint with sliding windows")
    with_config(sp)
    sp.add_argument("checkpoint")
    sp.add_argument("--eval", nargs="+", default=["mIoU", "mFscore"], choices=["mIoU", "mFscore", "mDice"])
    sp.add_argument("--show-dir", help="write image | prediction | ground-truth overlays here")
    sp.add_argument("--aug-test", action="store_true", help="flip test-time augmentation (on by default for iSAID)")
    sp.add_argument("--split", help="split folder to evaluate (default: the config's test_split)")
    sp.add_argument("--out-dir", help="where metrics.json and confusion_matrix.png go (default: next to CHECKPOINT)")
    sp.add_argument("--device", default="auto")
    sp.set_defaults(func=cmd_test)

    sp = sub.add_parser("export", help="checkpoint → engine model file (.rspmodel)")
    sp.add_argument("checkpoint")
    sp.add_argument("--output", required=True)
    sp.add_argument("--config", help="preset, when the checkpoint does not carry its config (mmseg checkpoints)")
    sp.add_argument("--metrics", help="metrics.json written by `test`, stored in the model file")
    sp.add_argument("--description", help="text for the analyst (what the model is for, on what data, its limits)")
    sp.set_defaults(func=cmd_export)

    from training.finetune.cli import add_parsers as add_finetune_parsers

    add_finetune_parsers(sub)

    from training.suggest_cli import add_parser as add_suggest_parser

    add_suggest_parser(sub)

    sp = sub.add_parser("convert-potsdam", help="ISPRS Potsdam archives → 512² patches, stride 384")
    sp.add_argument("source", help="folder with 3_Ortho_IRRG (or 2_Ortho_RGB) and 5_Labels_all, zipped or extracted")
    sp.add_argument("--output", required=True)
    sp.add_argument("--ortho", choices=["irrg", "rgb"], default="irrg")
    sp.add_argument("--allow-missing", action="store_true", help="convert the tiles present even if some are missing")
    sp.set_defaults(func=cmd_convert_potsdam)

    sp = sub.add_parser("convert-isaid", help="DOTA images + iSAID masks → 896² patches, stride 512")
    sp.add_argument("source", help="folder with train/ and val/, each holding P*.png and P*_instance_color_RGB.png")
    sp.add_argument("--output", required=True)
    sp.add_argument("--splits", nargs="+", default=["train", "val"])
    sp.set_defaults(func=cmd_convert_isaid)
    return p


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the command; user errors of the classic commands print one ``error:`` line and return 2."""
    args = build_parser().parse_args(argv)
    from training.checkpoint import CheckpointError
    from training.convert.common import ConversionError
    from training.datasets import DatasetLayoutError
    from training.trainer import TrainingError

    try:
        return int(args.func(args))
    except (ConfigError, ConversionError, DatasetLayoutError, CheckpointError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    from engine.allocator import keep_freed_memory

    keep_freed_memory()  # a process that ends with its work keeps freed memory for reuse (see engine.allocator)
    sys.exit(main())
