"""The Train dialog's result table: the model's hold-out figures, the majority-class row and the run's warnings."""

from __future__ import annotations

from qgis_plugin.train_results import results_html

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
