"""The Train dialog's result table: the model's hold-out figures, the majority-class row and the run's warnings;
after Continue training, the previous and the new model side by side."""

from __future__ import annotations

import re

from qgis_plugin.train_results import HoldoutFigures, results_html

METRICS = {"OA": 80.0, "kappa": 10.0, "mIoU": 20.0, "mF1": 25.0}
PER_CLASS = [{"class": "forest", "F1": 88.0, "IoU": 80.0, "pixels": 900}, {"class": "road", "IoU": 0.0, "pixels": 50}]


def test_a_collapse_shows_the_majority_row_and_the_warning():
    majority = {"class": "forest", "OA": 91.84, "kappa": 0.0, "mIoU": 30.61, "mF1": 31.9}
    warning = "on the held-out blocks the model never predicts road (1 of the 2 classes it was trained on): ..."
    text = results_html("mine", METRICS, PER_CLASS, {}, 950, majority, [warning])
    assert "this model" in text and "always forest" in text and "91.8" in text and "30.6" in text
    assert "never predicts road" in text and text.index("always forest") < text.index("never predicts road")


def test_without_majority_or_warnings_the_table_is_as_before():
    text = results_html("mine", METRICS, PER_CLASS, {}, 950)
    assert "always" not in text and "&#9888;" not in text and "this model" not in text


def test_continue_training_shows_both_models_side_by_side():
    previous = HoldoutFigures(
        "mine", {"OA": 61.25, "kappa": 40.0, "mIoU": 30.0, "mF1": 41.0}, {"class": "tree", "OA": 38.3, "mIoU": 7.7}, 800
    )
    text = results_html(
        "mine_2", METRICS, PER_CLASS, {}, 950, {"class": "forest", "OA": 50.0, "mIoU": 12.5}, [], previous
    )
    assert "previous: mine<br>" in text and "new: mine_2" in text
    rows = {cells[0]: cells[1:] for cells in _rows(text)}
    assert rows[""] == ["previous", "new", "change"]
    assert rows["OA"] == ["61.2", "80.0", "+18.8"] and rows["kappa"] == ["40.0", "10.0", "-30.0"]
    assert rows["mIoU"] == ["30.0", "20.0", "-10.0"] and rows["mF1"] == ["41.0", "25.0", "-16.0"]
    assert rows["most frequent class"][:2] == ["tree", "forest"]
    assert rows["OA always answering it"][:2] == ["38.3", "50.0"]
    assert rows["mIoU always answering it"][:2] == ["7.7", "12.5"]
    assert rows["held-out pixels"][:2] == ["800", "950"]
    assert "its own run" in text and "this model" not in text  # the single-model table is replaced
    assert "forest" in text.split("Class")[1]  # the new model's per-class table follows


def _rows(text: str) -> list[list[str]]:
    """The side-by-side table's rows as lists of cell texts (HTML tags and spacing removed)."""
    table = text.split("<table", 2)[1]
    rows = []
    for row in table.split("<tr>")[1:]:
        cells = [re.sub(r"<[^>]+>", "", c).replace("&nbsp;", " ").strip() for c in re.split(r"<t[dh][^>]*>", row)[1:]]
        rows.append(cells)
    return rows


def test_a_refit_model_is_said_to_have_learnt_from_the_held_out_blocks_too():
    assert "trained again on all labels" not in results_html("mine", METRICS, PER_CLASS, {}, 950)
    text = results_html("mine", METRICS, PER_CLASS, {}, 950, refit=True)
    assert text.index("kept out of training") < text.index("trained again on all labels") < text.index("Class")
