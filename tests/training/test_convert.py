"""Converters on small fake archive layouts made from the real Potsdam and iSAID samples in tests/data."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
from osgeo import gdal
from PIL import Image

from training.convert import ConversionError, window_starts
from training.convert.isaid import convert_isaid, patch_windows
from training.convert.potsdam import convert_potsdam

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
POTSDAM_RGB = os.path.join(DATA, "potsdam", "2_10_0_0_512_512_rgb.png")
POTSDAM_COLOUR = os.path.join(DATA, "potsdam", "2_10_0_0_512_512_label_color_DERIVED.png")
POTSDAM_INDEX = os.path.join(DATA, "potsdam", "2_10_0_0_512_512_label_6cls_ignore255_DERIVED.png")


def _png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def _write_tif(path: str, array: np.ndarray) -> None:
    drv = gdal.GetDriverByName("GTiff")
    ds = drv.Create(path, array.shape[1], array.shape[0], array.shape[2], gdal.GDT_Byte)
    for b in range(array.shape[2]):
        ds.GetRasterBand(b + 1).WriteArray(array[..., b])
    ds = None


def test_window_starts_cover_and_end_at_border() -> None:
    starts = window_starts(6000, 512, 384)
    assert len(starts) == 16 and starts[:3] == [0, 384, 768] and starts[-2:] == [5376, 5488]
    assert window_starts(1147, 896, 512) == [0, 251]
    assert window_starts(1536, 896, 512) == [0, 512, 640]
    assert window_starts(512, 512, 384) == [0] and window_starts(300, 512, 384) == [0]


@pytest.fixture
def potsdam_source(tmp_path):
    """Fake official layout: 2_Ortho_RGB/ folder with two tiles, 5_Labels_all.zip with their labels."""
    src = tmp_path / "archives"
    (src / "2_Ortho_RGB").mkdir(parents=True)
    rgb, colour = _png(POTSDAM_RGB), _png(POTSDAM_COLOUR)
    tiles = {"2_10": (rgb, colour), "2_13": (rgb[:, ::-1], colour[:, ::-1])}  # a train and a val tile
    with zipfile.ZipFile(src / "5_Labels_all.zip", "w") as zf:
        for tile, (img, lab) in tiles.items():
            _write_tif(str(src / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif"), np.ascontiguousarray(img))
            tif = tmp_path / f"top_potsdam_{tile}_label.tif"
            _write_tif(str(tif), np.ascontiguousarray(lab))
            zf.write(tif, f"top_potsdam_{tile}_label.tif")
    return src


def test_potsdam_missing_tiles_are_named(potsdam_source, tmp_path) -> None:
    with pytest.raises(ConversionError, match=r"top_potsdam_2_11_RGB\.tif.*--allow-missing"):
        convert_potsdam(str(potsdam_source), str(tmp_path / "out"), ortho="rgb")
    with pytest.raises(ConversionError, match=r"top_potsdam_2_10_IRRG\.tif"):
        convert_potsdam(str(potsdam_source), str(tmp_path / "out"), ortho="irrg", allow_missing=True)


def test_potsdam_patches_labels_split_and_resume(potsdam_source, tmp_path) -> None:
    out = tmp_path / "out"
    log = io.StringIO()
    report = convert_potsdam(
        str(potsdam_source), str(out), ortho="rgb", size=256, stride=192, allow_missing=True, stream=log
    )
    assert report.written == {"train": 9, "val": 9}  # starts 0, 192, 256 in each direction
    assert "2_11" in report.missing_tiles and "potsdam patches" in log.getvalue()
    name = "2_10_192_256_448_512"  # x1 192, y1 256
    img = _png(out / "img_dir" / "train" / f"{name}.png")
    np.testing.assert_array_equal(img, _png(POTSDAM_RGB)[256:512, 192:448])
    expected = _png(POTSDAM_INDEX).copy()
    expected[expected == 255] = 5  # black boundary pixels → ignore (5), never class 0
    lab = _png(out / "ann_dir" / "train" / f"{name}.png")
    np.testing.assert_array_equal(lab, expected[256:512, 192:448])
    val_lab = _png(out / "ann_dir" / "val" / "2_13_0_0_256_256.png")
    np.testing.assert_array_equal(val_lab, expected[:, ::-1][0:256, 0:256])
    assert report.unknown_pixels["2_10"] == int((_png(POTSDAM_INDEX) == 255).sum()) == 24696
    # Resume: nothing rewritten; a deleted patch is rewritten alone.
    again = convert_potsdam(
        str(potsdam_source), str(out), ortho="rgb", size=256, stride=192, allow_missing=True, stream=log
    )
    assert again.written == {"train": 0, "val": 0} and again.skipped == {"train": 9, "val": 9}
    os.remove(out / "ann_dir" / "val" / "2_13_0_0_256_256.png")
    third = convert_potsdam(
        str(potsdam_source), str(out), ortho="rgb", size=256, stride=192, allow_missing=True, stream=log
    )
    assert third.written == {"train": 0, "val": 1}
    np.testing.assert_array_equal(_png(out / "ann_dir" / "val" / "2_13_0_0_256_256.png"), val_lab)


@pytest.fixture
def isaid_source(tmp_path):
    src = tmp_path / "isaid_src"
    for split, stem in (("train", "P0003"), ("val", "P0004")):
        (src / split / "images").mkdir(parents=True)
        (src / split / "Semantic_masks").mkdir(parents=True)
        shutil.copy(os.path.join(DATA, "isaid", f"{stem}_crop.png"), src / split / "images" / f"{stem}.png")
        shutil.copy(
            os.path.join(DATA, "isaid", f"{stem}_crop_instance_color_RGB.png"),
            src / split / "Semantic_masks" / f"{stem}_instance_color_RGB.png",
        )
    # P1527 is skipped by the seed even when present (here without a mask, which would otherwise be an error).
    shutil.copy(os.path.join(DATA, "isaid", "P0004_crop.png"), src / "train" / "images" / "P1527.png")
    return src


def test_isaid_windows_match_seed_rules() -> None:
    wins = patch_windows("P0003", 1023, 1147, 896, 512)
    assert [w[0] for w in wins] == [
        "P0003_0_896_0_896",
        "P0003_0_896_251_1147",
        "P0003_127_1023_0_896",
        "P0003_127_1023_251_1147",
    ]
    assert patch_windows("P0004", 1464, 824, 896, 512) == [("P0004", 0, 1464, 0, 824)]  # one side <= 896: whole


def test_isaid_patches_labels_and_resume(isaid_source, tmp_path) -> None:
    out = tmp_path / "isaid"
    log = io.StringIO()
    report = convert_isaid(str(isaid_source), str(out), size=448, stride=256, stream=log)
    assert report.written == {"train": 4, "val": 1} and report.whole_images == ["P0004"]
    assert not os.path.exists(out / "train" / "images" / "P1527.png")
    idx3 = _png(os.path.join(DATA, "isaid", "P0003_crop_semantic_idx_DERIVED.png"))  # 623 x 700
    lab = _png(out / "train" / "labels" / "P0003_175_623_252_700_instance_color_RGB.png")
    np.testing.assert_array_equal(lab, idx3[175:623, 252:700])
    first = _png(out / "train" / "labels" / "P0003_0_448_0_448_instance_color_RGB.png")
    np.testing.assert_array_equal(first, idx3[:448, :448])
    assert set(np.unique(first)) == {0, 2, 8}  # background, storage tank, large vehicle
    img = _png(out / "train" / "images" / "P0003_0_448_0_448.png")
    np.testing.assert_array_equal(img, _png(os.path.join(DATA, "isaid", "P0003_crop.png"))[:448, :448])
    whole = _png(out / "val" / "labels" / "P0004_instance_color_RGB.png")
    np.testing.assert_array_equal(whole, _png(os.path.join(DATA, "isaid", "P0004_crop_semantic_idx_DERIVED.png")))
    again = convert_isaid(str(isaid_source), str(out), size=448, stride=256, stream=log)
    assert again.written == {"train": 0, "val": 0} and again.skipped == {"train": 4, "val": 1}


def test_isaid_unknown_colour_becomes_ignore_and_missing_mask_is_named(isaid_source, tmp_path) -> None:
    mask_path = isaid_source / "val" / "Semantic_masks" / "P0004_instance_color_RGB.png"
    mask = _png(mask_path).copy()
    mask[:10, :10] = (12, 34, 56)  # not an iSAID colour
    Image.fromarray(mask).save(mask_path)
    report = convert_isaid(
        str(isaid_source), str(tmp_path / "o"), splits=("val",), size=448, stride=256, stream=io.StringIO()
    )
    lab = _png(tmp_path / "o" / "val" / "labels" / "P0004_instance_color_RGB.png")
    assert (lab[:10, :10] == 255).all() and report.unknown_pixels["P0004"] == 100
    os.remove(mask_path)
    with pytest.raises(ConversionError, match=r"P0004_instance_color_RGB\.png"):
        convert_isaid(str(isaid_source), str(tmp_path / "o2"), splits=("val",), stream=io.StringIO())
