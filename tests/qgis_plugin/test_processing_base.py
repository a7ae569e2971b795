"""The toolbox entry every Processing algorithm of the plugin takes from ``processing_base.RspAlgorithm``."""

from __future__ import annotations


def test_toolbox_entries_and_one_paragraph_help(qgis_app) -> None:
    from qgis_plugin.processing_algorithm import SegmentRasterAlgorithm
    from qgis_plugin.processing_training import AccuracyAlgorithm, FinetuneAlgorithm

    algorithms = [SegmentRasterAlgorithm(), FinetuneAlgorithm(), AccuracyAlgorithm()]
    assert {a.name(): (a.group(), a.groupId()) for a in algorithms} == {
        "segmentraster": ("Segmentation", "segmentation"),
        "finetune": ("Training", "training"),
        "accuracy": ("Training", "training"),
    }
    for algorithm in algorithms:
        help_text = algorithm.shortHelpString()  # the class docstring; Processing shows each line as a paragraph
        assert len(help_text) > 200 and "\n" not in help_text and "  " not in help_text, help_text
        assert type(algorithm.createInstance()) is type(algorithm)
