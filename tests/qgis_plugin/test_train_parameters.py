"""The fine-tuning run's parameters and command line (qgis_plugin.train_parameters), without a GUI.

The arguments are parsed by the training package's own parser, so a change of its fixed command line breaks here.
"""

from __future__ import annotations

import json
import os

import pytest

from qgis_plugin.parameters import InvalidParametersError
from qgis_plugin.train_parameters import (
    CHECKPOINT_FILE_NAME,
    DEFAULT_ITERATIONS,
    FALLBACK_ITERATIONS,
    REPORT_FILE_NAME,
    RSP_BACKBONE_ARCHS,
    RUN_STATE_FILE_NAME,
    StartKind,
    TrainParameters,
    accuracy_args,
    class_entry,
    default_iterations,
    has_unfinished_run,
    model_name_problem,
    resumable_labels,
    safe_model_name,
    work_folder_for,
    write_classes_json,
)


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name in ("ortho.tif", "labels.gpkg", "start.rspmodel", "rsp-swin-t-ckpt.pth"):
        (tmp_path / name).write_bytes(b"x")
        paths[name] = str(tmp_path / name)
    models = tmp_path / "rsp_models"
    models.mkdir()
    paths["output"] = str(models / "mine.rspmodel")
    return paths


def parse(args):
    from training.__main__ import build_parser

    return build_parser().parse_args(args)


def test_model_start_arguments_parse_with_the_training_cli(files) -> None:
    params = TrainParameters(
        raster_path=files["ortho.tif"],
        labels_path=files["labels.gpkg"],
        class_field="class",
        output_model=files["output"],
        init_model=files["start.rspmodel"],
        iterations=2,
        batch_size=2,
        tile=128,
        classes_json=None,
    )
    assert params.problems() == []
    args = params.finetune_args()
    assert args[:9] == [
        "finetune", "--raster", files["ortho.tif"], "--labels", files["labels.gpkg"], "--class-field", "class",
        "--output", files["output"],
    ]  # fmt: skip
    ns = parse(args)
    assert ns.command == "finetune"
    assert (ns.rasters, ns.labels, ns.class_field, ns.output) == (
        [files["ortho.tif"]],
        [files["labels.gpkg"]],
        "class",
        files["output"],
    )
    assert (ns.init, ns.backbone, ns.arch, ns.iters, ns.batch_size, ns.tile) == (
        files["start.rspmodel"],
        None,
        None,
        2,
        2,
        128,
    )
    assert ns.work_dir == work_folder_for(files["output"]) == files["output"][: -len(".rspmodel")] + "_finetune"
    assert ns.device == "cpu" and ns.val_fraction == 0.2 and ns.classes is None
    assert not (ns.resume or ns.overwrite or ns.freeze_backbone)


def test_backbone_start_and_options(files, tmp_path) -> None:
    classes = tmp_path / "classes.json"
    classes.write_text("[]")
    params = TrainParameters(
        raster_path=files["ortho.tif"],
        labels_path=files["labels.gpkg"],
        class_field="class",
        output_model=files["output"],
        start=StartKind.BACKBONE,
        backbone=files["rsp-swin-t-ckpt.pth"],
        arch="rsp_swin_t",
        device="cuda",
        classes_json=str(classes),
        freeze_backbone=True,
        val_fraction=0.3,
        bands=(3, 2, 1),
        overwrite=True,
    )
    assert params.problems() == []
    ns = parse(params.finetune_args())
    assert (ns.init, ns.backbone, ns.arch) == (None, files["rsp-swin-t-ckpt.pth"], "rsp_swin_t")
    assert ns.iters is None  # the architecture's default
    assert (ns.device, ns.classes, ns.freeze_backbone, ns.val_fraction, ns.bands, ns.overwrite) == (
        "cuda", str(classes), True, 0.3, (3, 2, 1), True,
    )  # fmt: skip
    without_arch = TrainParameters(**{**params.__dict__, "arch": None})
    assert "--arch" not in without_arch.finetune_args()


def test_accuracy_arguments_parse_with_the_training_cli() -> None:
    ns = parse(accuracy_args("pred.tif", "ref.gpkg", "class", "report.json"))
    assert (ns.command, ns.prediction, ns.reference, ns.class_field, ns.output) == (
        "accuracy", "pred.tif", "ref.gpkg", "class", "report.json",
    )  # fmt: skip
    assert accuracy_args("pred.tif", "ref.tif", None, None) == [
        "accuracy",
        "--prediction",
        "pred.tif",
        "--reference",
        "ref.tif",
    ]


def test_problems_say_what_to_fix(files, tmp_path) -> None:
    params = TrainParameters(
        raster_path="", labels_path="", class_field="", output_model="out.tif", iterations=0, tile=100
    )
    text = "\n".join(params.problems())
    for expected in (
        "raster layer",
        "polygon layer",
        "class field",
        "model to start from",
        ".rspmodel",
        "Iterations",
        "multiple of 32",
    ):
        assert expected in text, expected
    with pytest.raises(InvalidParametersError):
        params.validate()
    existing = TrainParameters(
        files["ortho.tif"], files["labels.gpkg"], "class", files["start.rspmodel"], init_model=files["start.rspmodel"]
    )
    assert any("exists" in p and "Replace" in p for p in existing.problems())
    assert TrainParameters(**{**existing.__dict__, "overwrite": True}).problems() == []
    resume = TrainParameters(
        files["ortho.tif"],
        files["labels.gpkg"],
        "class",
        files["output"],
        init_model=files["start.rspmodel"],
        resume=True,
    )
    assert any("no interrupted run" in p for p in resume.problems())
    backbone = TrainParameters(
        files["ortho.tif"], files["labels.gpkg"], "class", files["output"], start=StartKind.BACKBONE, arch="lite_resnet"
    )
    assert any("RSP backbone file" in p for p in backbone.problems())
    assert any("architecture must be one of" in p for p in backbone.problems())
    pending = TrainParameters(
        files["ortho.tif"], str(tmp_path / "later.gpkg"), "class", files["output"], init_model=files["start.rspmodel"]
    )
    assert pending.problems(inputs_pending=True) == [] and pending.problems() != []


def test_defaults_follow_the_training_package() -> None:
    from engine.models import ARCHS
    from training.checkpoint import LATEST
    from training.finetune.run import DEFAULT_RECIPE, RECIPES, REPORT_FILE, STATE_FILE, FinetuneRequest

    assert {arch: recipe.iters for arch, recipe in RECIPES.items()} == DEFAULT_ITERATIONS
    assert DEFAULT_RECIPE.iters == FALLBACK_ITERATIONS
    assert default_iterations("lite_resnet") == 300 and default_iterations(None) == RECIPES["rsp_resnet50"].iters
    assert set(RSP_BACKBONE_ARCHS) <= set(ARCHS)
    assert (CHECKPOINT_FILE_NAME, RUN_STATE_FILE_NAME, REPORT_FILE_NAME) == (LATEST, STATE_FILE, REPORT_FILE)
    request = FinetuneRequest(rasters=("a.tif",), labels=("b.gpkg",), output="/data/models/mine.rspmodel")
    assert work_folder_for("/data/models/mine.rspmodel") == request.work_folder


def test_unfinished_run_and_its_exported_labels(tmp_path) -> None:
    output = str(tmp_path / "mine.rspmodel")
    work = work_folder_for(output)
    assert not has_unfinished_run(output) and resumable_labels(work) is None
    os.makedirs(work)
    (tmp_path / "mine_finetune" / CHECKPOINT_FILE_NAME).write_bytes(b"x")
    assert has_unfinished_run(output)
    exported = os.path.join(work, "labels.gpkg")
    open(exported, "wb").close()
    with open(os.path.join(work, RUN_STATE_FILE_NAME), "w") as f:
        json.dump({"labels": [[exported, 0, 0]]}, f)
    assert resumable_labels(work) == exported
    with open(os.path.join(work, RUN_STATE_FILE_NAME), "w") as f:
        json.dump({"labels": [[str(tmp_path / "own_file.gpkg"), 0, 0]]}, f)
    assert resumable_labels(work) is None  # the layer's own file: read again as it is
    open(output, "wb").close()
    assert not has_unfinished_run(output)  # finished: the model exists


def test_classes_json_is_what_the_training_package_reads(tmp_path) -> None:
    from training.finetune.classes import build_table, read_classes_json

    entries = [class_entry("Roads", (200, 200, 200), "impervious_surface"), class_entry("Houses", (220, 0, 0), 1.0)]
    assert entries[1]["value"] == 1  # 1.0 from an integer field is the code 1
    path = write_classes_json(entries, str(tmp_path / "run" / "classes.json"))
    table = build_table(["impervious_surface", "1", "tree"], read_classes_json(path))
    assert table.names == ("Roads", "Houses")
    assert table.colors == ((200, 200, 200), (220, 0, 0))
    assert table.class_of("impervious_surface") == 0 and table.class_of(1) == 1 and table.class_of("tree") is None
    with pytest.raises(InvalidParametersError, match="different labels"):
        write_classes_json([*entries, class_entry("Roads", (0, 0, 0), "road")], str(tmp_path / "x.json"))


def test_model_names() -> None:
    assert model_name_problem("potsdam_finetuned-2.v1") is None
    assert model_name_problem("") and model_name_problem("a/b") and model_name_problem("_x")
    assert safe_model_name(" Potsdam 2/10 (RGB) ") == "Potsdam_2_10_RGB"
    assert safe_model_name("///") == "model"
