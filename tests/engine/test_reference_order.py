"""What ``--exact`` needs besides the network's own float order: the input normalised as the reference computes it,
and windows run one at a time as the reference runs them."""

from __future__ import annotations

import numpy as np
import pytest

from engine import options
from engine.errors import ParameterError
from engine.model_file import ModelInfo
from engine.predict import PredictRequest
from engine.raster_io import Normalizer

INFO = ModelInfo(arch="lite_resnet", num_classes=2, class_names=("a", "b"), colors=((0, 0, 0), (9, 9, 9)))


def test_8_bit_input_is_normalised_bit_for_bit_as_the_reference_does() -> None:
    """mmseg's test pipeline (and ../shared/seed_bench/seed_slide.py): ``(img.astype(float32) - mean) / std`` with
    float32 mean and std, per band; a folded ``img * (1 / std) + (-mean / std)`` differs in the last bit."""
    raw = np.random.default_rng(0).integers(0, 256, (3, 64, 80), dtype=np.uint8)
    ours = Normalizer.create(INFO, (0.0, 255.0))(raw)
    mean, std = (np.asarray(v, np.float32) for v in (INFO.mean, INFO.std))
    reference = (raw.transpose(1, 2, 0).astype(np.float32) - mean) / std  # (h, w, C), as the reference holds it
    assert ours.dtype == np.float32 and ours.shape == raw.shape
    assert np.array_equal(ours, reference.transpose(2, 0, 1))
    folded = raw.astype(np.float32) * (1 / std)[:, None, None] + (-mean / std)[:, None, None]
    assert not np.array_equal(folded, reference.transpose(2, 0, 1))  # why the order matters


def test_other_value_ranges_are_mapped_onto_the_models_then_normalised() -> None:
    raw = np.array([[[0, 5000, 10000]]] * 3, np.uint16)  # (3, 1, 3)
    ours = Normalizer.create(INFO, (0.0, 10000.0))(raw)
    expected = (np.array([0.0, 127.5, 255.0])[None, None, :] - np.array(INFO.mean)[:, None, None]) / np.array(INFO.std)[
        :, None, None
    ]
    assert np.allclose(ours, expected, rtol=0, atol=1e-5)


def test_exact_runs_one_window_at_a_time_unless_a_batch_size_is_given() -> None:
    """The reference runs one window per forward, and oneDNN rounds other batch sizes differently."""
    base = {"model": "m.rspmodel", "input": "in.tif", "output": "out.tif"}
    assert PredictRequest(**base).windows_per_pass == options.BATCH_SIZE
    assert PredictRequest(**base, exact=True).windows_per_pass == 1
    assert PredictRequest(**base, exact=True, batch_size=3).windows_per_pass == 3
    assert PredictRequest(**base, batch_size=2).windows_per_pass == 2
    for bad in (0, -1):
        with pytest.raises(ParameterError, match="--batch-size must be >= 1"):
            PredictRequest(**base, batch_size=bad)
