"""Classes, label rasterisation and the spatial split of fine-tuning, on the real Potsdam sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from finetune_support import LABELS_TIF, NAMES, RASTER, label_array
from osgeo import gdal

from engine.errors import ParameterError
from engine.tiling import Window
from training.finetune import split as sp
from training.finetune.classes import IGNORE, KNOWN_COLOURS, PALETTE, build_table, read_classes_json, sort_values
from training.finetune.labels import LabelError, LabelSource


def test_sort_values_numeric_and_names():
    assert sort_values(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_values(["tree", "Building", "car"]) == ["Building", "car", "tree"]


def test_default_table_sorted_with_readable_distinct_colours():
    table = build_table(["tree", "building", "mystery", "water"])
    assert table.names == ("building", "mystery", "tree", "water")
    assert table.colors[0] == KNOWN_COLOURS["building"] and table.colors[3] == KNOWN_COLOURS["water"]
    assert table.colors[1] == PALETTE[0]
    assert len(set(table.colors)) == 4
    assert table.class_of("tree") == 2 and table.class_of("grass") is None


def test_classes_json_order_colours_and_values(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(
        json.dumps({"classes": [{"name": "roof", "value": 2, "color": "#ff0000"}, {"name": "other", "value": 1}]})
    )
    table = build_table(["1", "2", "3"], read_classes_json(str(path)))
    assert table.names == ("roof", "other")
    assert table.colors[0] == (255, 0, 0)
    assert (
        table.class_of(2) == 0 and table.class_of(2.0) == 0 and table.class_of("1") == 1 and table.class_of(3) is None
    )


@pytest.mark.parametrize("found", [["building"], []])
def test_one_class_is_refused(found):
    with pytest.raises(ParameterError, match="at least two"):
        build_table(found)


def test_polygons_burn_back_to_the_label_raster(potsdam_polygons):
    src = LabelSource(potsdam_polygons, "class")
    assert set(src.values()) == {"impervious_surface", "building", "low_vegetation", "tree", "car"}
    table = build_table(src.values(), [{"name": n} for n in NAMES[:5]])
    ds = gdal.Open(RASTER)
    burned = src.burn(ds, Window(0, 0, 512, 512), table)
    np.testing.assert_array_equal(burned, label_array())  # traced by GDAL, rasterised by us: the same pixels
    part = src.burn(ds, Window(100, 200, 50, 70), table)
    np.testing.assert_array_equal(part, label_array()[100:150, 200:270])


def test_polygons_in_another_crs_are_reprojected(potsdam_polygons_wgs84):
    src = LabelSource(potsdam_polygons_wgs84, "class")
    table = build_table(src.values(), [{"name": n} for n in NAMES[:5]])
    burned = src.burn(gdal.Open(RASTER), Window(0, 0, 512, 512), table)
    ref = label_array()
    both = (burned != IGNORE) & (ref != IGNORE)
    assert both.sum() > 0.9 * (ref != IGNORE).sum()
    assert (burned[both] == ref[both]).mean() > 0.99  # only pixels on polygon edges may move


def test_class_raster_labels_on_another_grid(tmp_path):
    # the label raster resampled to 10 cm: warped back (nearest) onto the 5 cm grid
    coarse = str(tmp_path / "coarse.tif")
    gdal.Translate(coarse, LABELS_TIF, xRes=0.1, yRes=0.1, resampleAlg="near")
    src = LabelSource(coarse)
    assert set(src.values()) == {"0", "1", "2", "3", "4"}
    table = build_table(src.values())
    burned = src.burn(gdal.Open(RASTER), Window(0, 0, 512, 512), table)
    ref = label_array()
    both = (burned != IGNORE) & (ref != IGNORE)
    assert (burned[both] == ref[both]).mean() > 0.97


def test_missing_class_field_lists_the_fields(potsdam_polygons):
    with pytest.raises(LabelError, match=r"no field 'kind'.*class"):
        LabelSource(potsdam_polygons, "kind")


def test_holdout_blocks_cover_classes_and_leave_training():
    counts = np.array([[10, 0, 0], [5, 5, 0], [0, 8, 2], [7, 0, 3], [0, 0, 0], [9, 9, 9]])
    a = sp.choose_holdout(counts, 0.4, seed=1)
    assert a.sum() == 2 and not a[4]
    assert (counts[~a].sum(axis=0) > 0).all()  # every class keeps training pixels
    np.testing.assert_array_equal(a, sp.choose_holdout(counts, 0.4, seed=1))  # deterministic


def test_chips_never_overlap_holdout_blocks():
    lab = label_array()

    def read(w):
        return lab[w.row : w.row_end, w.col : w.col_end]

    extent = Window(0, 0, 512, 512)
    blocks = sp.block_windows(extent, 128)
    assert len(blocks) == 16
    counts = sp.count_blocks(blocks, read, 5)
    assert counts.sum() == (lab != IGNORE).sum()
    hold = sp.choose_holdout(counts, 0.2, seed=0)
    held = [b for b, h in zip(blocks, hold, strict=True) if h]
    assert len(held) == 3
    chips = sp.training_chips(sp.candidate_chips(extent, 128, read, extent), held)
    assert chips and all(not c.intersects(h) for c in chips for h in held)


def test_holdout_prefers_blocks_that_cost_fewest_chips():
    # a 3x4 grid of 128 px blocks with labels everywhere; 256 px chips every 64 px
    lab = np.zeros((512, 384), np.uint8)
    lab[:, 192:] = 1
    extent = Window(0, 0, 512, 384)
    blocks = sp.block_windows(extent, 128)
    counts = sp.count_blocks(blocks, lambda w: lab[w.row : w.row_end, w.col : w.col_end], 2)
    chips = sp.candidate_chips(extent, 256, lambda w: lab[w.row : w.row_end, w.col : w.col_end], extent)
    per_block = sp.chips_per_block(blocks, chips)
    kept = {}
    for seed in range(5):
        for aware in (True, False):
            hold = sp.choose_holdout(counts, 0.2, seed, per_block if aware else None)
            assert hold.sum() == 2
            held = [b for b, h in zip(blocks, hold, strict=True) if h]
            kept[seed, aware] = len(sp.training_chips(chips, held))
    assert all(kept[s, True] >= kept[s, False] for s in range(5))
    assert any(kept[s, True] > kept[s, False] for s in range(5))


def test_too_few_labels_says_how_much_more_to_digitise():
    counts = np.array([[300, 0], [0, 200]])
    split = sp.Split([Window(0, 0, 64, 64), Window(0, 64, 64, 64)], counts, sp.choose_holdout(counts, 0.2, 0))
    with pytest.raises(ParameterError) as err:
        sp.check_sizes([split], 0.05, 0.2, 64)
    assert "too few labelled pixels" in str(err.value) and "digitise at least" in err.value.hint


def test_small_labelled_area_trains_on_smaller_chips(tmp_path):
    from training.finetune.prepare import prepare_data

    labels = LabelSource(LABELS_TIF)
    table = build_table(labels.values())
    # 512² labelled: blocks of 256, one held out; no 512² chip avoids it, 256² chips do
    data = prepare_data([(RASTER, LABELS_TIF)], None, table, [labels], ("red", "green", "blue"), (0.0, 255.0),
                        None, None, 512, sp.block_size(512), 0.2, 0, str(tmp_path), lambda: None)  # fmt: skip
    assert data.chip == 256 and data.chips
    assert any("training on 256×256 chips" in w for w in data.warnings)
    held = data.splits[0].holdout_blocks
    assert len(held) == 1 and all(not w.intersects(h) for _, w in data.chips for h in held)
    assert sp.chip_sizes(512) == [512, 256, 128, 64] and sp.chip_sizes(96) == [96]
