"""``training suggest``'s argument list and checks (:mod:`qgis_plugin.suggest_parameters`), without a GUI."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgis_plugin.parameters import InvalidParametersError
from qgis_plugin.suggest_parameters import (
    DEFAULT_COUNT,
    SuggestParameters,
    free_suggestions_path,
    suggestions_stem,
)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    paths = {"model": tmp_path / "m.rspmodel", "raster": tmp_path / "ortho image.tif", "labels": tmp_path / "l.gpkg"}
    for path in paths.values():
        path.write_bytes(b"x")
    return {key: str(path) for key, path in paths.items()}


def _value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


def test_arguments_with_labels(files, tmp_path) -> None:
    out = str(tmp_path / "s.gpkg")
    params = SuggestParameters(
        files["model"],
        files["raster"],
        out,
        labels_path=files["labels"],
        class_field="class",
        count=5,
        size=96,
        device="cuda",
    )
    params.validate()
    args = params.suggest_args()
    assert args[0] == "suggest"
    expected = {"--model": files["model"], "--raster": files["raster"], "--labels": files["labels"]}
    expected |= {"--class-field": "class", "--count": "5", "--size": "96", "--output": out, "--device": "cuda"}
    assert {flag: _value(args, flag) for flag in expected} == expected
    assert "--overwrite" not in args
    assert len(args) == 1 + 2 * len(expected)  # nothing else
    assert params.output_paths() == [out]


def test_arguments_without_labels_or_size(files, tmp_path) -> None:
    params = SuggestParameters(files["model"], files["raster"], str(tmp_path / "s.gpkg"), overwrite=True)
    args = params.suggest_args()
    assert not {"--labels", "--class-field", "--size", "--device"} & set(args)
    assert _value(args, "--count") == str(DEFAULT_COUNT)
    assert args[-1] == "--overwrite"


def test_problems_are_listed_together(files, tmp_path) -> None:
    existing = tmp_path / "taken.gpkg"
    existing.write_bytes(b"x")
    params = SuggestParameters(
        str(tmp_path / "missing.rspmodel"), "https://example.com/tiles", str(existing),
        labels_path=str(tmp_path / "gone.gpkg"), count=0, size=4, device="tpu",
    )  # fmt: skip
    with pytest.raises(InvalidParametersError) as info:
        params.validate()
    text = str(info.value)
    for words in ("model file", "GDAL reads", "labels file", "number of squares", "square size", "Device", "exists"):
        assert words in text, words
    assert (
        SuggestParameters(files["model"], "/vsicurl/https://x/cog.tif", str(existing), overwrite=True).problems() == []
    )
    assert "GeoPackage" in " ".join(
        SuggestParameters(files["model"], files["raster"], str(tmp_path / "s.shp")).problems()
    )
    assert "needs a labels layer" in " ".join(
        SuggestParameters(files["model"], files["raster"], str(tmp_path / "s.gpkg"), class_field="class").problems()
    )


def test_free_path_never_clobbers(tmp_path) -> None:
    stem = suggestions_stem("/data/ortho image.tif", "/models/demo lite.rspmodel")
    assert stem == "ortho_image_demo_lite"
    first = free_suggestions_path(str(tmp_path), stem)
    assert Path(first) == tmp_path / "ortho_image_demo_lite_suggestions.gpkg"
    Path(first).write_bytes(b"x")
    second = free_suggestions_path(str(tmp_path), stem)
    assert Path(second) == tmp_path / "ortho_image_demo_lite_suggestions_2.gpkg"
    Path(second).write_bytes(b"x")
    assert free_suggestions_path(str(tmp_path), stem).endswith("_suggestions_3.gpkg")
    assert Path(first).read_bytes() == b"x"


def test_defaults_are_the_commands() -> None:
    import training.suggest as command
    from qgis_plugin import suggest_parameters

    assert suggest_parameters.DEFAULT_COUNT == command.DEFAULT_COUNT
    assert suggest_parameters.MIN_SIZE == command.MIN_SIZE
    assert suggest_parameters.SUGGESTIONS_SUFFIX + suggest_parameters.GPKG == command.OUTPUT_SUFFIX
