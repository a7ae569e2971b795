"""Pure tiling and blending: grid rule, edge policy, sub-extent selection, band accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from engine.blending import LABEL_NODATA, BandAccumulator, window_weight
from engine.tiling import (
    TilingError,
    Window,
    axis_spans,
    grid_count,
    grid_windows,
    group_by_grid_row,
    split_rows,
    windows_for_region,
)


def mmseg_spans(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """The loop of mmseg 0.21 ``slide_inference``, written out independently."""
    n = max(length - tile + stride - 1, 0) // stride + 1
    spans = []
    for i in range(n):
        y1 = i * stride
        y2 = min(y1 + tile, length)
        y1 = max(y2 - tile, 0)
        spans.append((y1, y2))
    return spans


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (1024, 512, 384, [(0, 512), (384, 896), (512, 1024)]),  # exact multiple of the tile, last window shifted
        (896, 512, 384, [(0, 512), (384, 896)]),  # iSAID patch: 2 windows
        (100, 64, 64, [(0, 64), (36, 100)]),  # non-multiple, no overlap
        (40, 64, 48, [(0, 40)]),  # smaller than a tile: one window of the raster's size
        (65, 64, 48, [(0, 64), (1, 65)]),  # a 1-pixel sliver past the tile
        (1, 64, 48, [(0, 1)]),  # 1-pixel raster
    ],
)
def test_axis_spans_hand_checked(length: int, tile: int, stride: int, expected: list[tuple[int, int]]) -> None:
    assert [tuple(s) for s in axis_spans(length, tile, stride).tolist()] == expected


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 111, 112, 113, 500, 1023])
@pytest.mark.parametrize(("tile", "stride"), [(64, 48), (64, 64), (64, 1), (32, 17)])
def test_axis_spans_match_mmseg_and_cover(length: int, tile: int, stride: int) -> None:
    spans = axis_spans(length, tile, stride)
    assert [tuple(s) for s in spans.tolist()] == mmseg_spans(length, tile, stride)
    assert len(spans) == grid_count(length, tile, stride)
    covered = np.zeros(length, bool)
    for a, b in spans.tolist():
        assert b - a == min(tile, length)
        covered[a:b] = True
    assert covered.all()


def test_bad_parameters_raise() -> None:
    with pytest.raises(TilingError, match="stride"):
        axis_spans(100, 32, 33)
    with pytest.raises(TilingError):
        axis_spans(0, 32, 16)
    with pytest.raises(TilingError, match="not inside"):
        windows_for_region(10, 10, 4, 4, Window(5, 5, 6, 2))


def test_region_windows_are_the_grid_windows_touching_it() -> None:
    h, w, tile, stride = 130, 97, 32, 24
    full = grid_windows(h, w, tile, stride)
    region = Window(40, 30, 20, 1)  # 1-pixel-wide sliver
    picked = windows_for_region(h, w, tile, stride, region)
    assert picked == [x for x in full if x.intersects(region)]
    assert picked == sorted(picked)
    assert [len(g) for g in group_by_grid_row(picked)] == [2, 2]  # rows 24..56 and 48..80; cols 24..56 and 0..32


def test_split_rows_covers_region() -> None:
    strips = split_rows(Window(3, 0, 100, 7), 3, 16)  # ceil(100 / 3) = 34 -> rounded up to 48
    assert [(s.row, s.height) for s in strips] == [(3, 48), (51, 48), (99, 4)]
    assert [(s.row, s.height) for s in split_rows(Window(0, 0, 100, 7), 4, 1)] == [
        (0, 25),
        (25, 25),
        (50, 25),
        (75, 25),
    ]


def test_smooth_weight_shape_and_floor() -> None:
    wgt = window_weight(8, 6)
    assert wgt.shape == (8, 6)
    assert wgt.min() > 0 and wgt[0, 0] < wgt[4, 3]
    np.testing.assert_allclose(wgt, wgt[::-1, ::-1], rtol=1e-6)  # symmetric
    assert (window_weight(3, 4, "reference") == 1).all()


def _run_accumulator(mode: str, region: Window, tile: int, stride: int, logits: np.ndarray) -> np.ndarray:
    """Feed per-pixel constant logits through the band accumulator; return the assembled labels."""
    k, h, w = logits.shape
    acc = BandAccumulator(region, k, tile, mode)
    out = np.full((region.height, region.width), 77, np.uint8)
    max_band_rows = 0

    def put(rows):
        if rows is not None:
            out[rows.row - region.row : rows.row - region.row + rows.labels.shape[0]] = rows.labels

    windows = windows_for_region(h, w, tile, stride, region)
    current = windows[0].grid_row
    for win in windows:
        if win.grid_row != current:
            put(acc.advance_to(win.row))
            current = win.grid_row
        acc.add(win, logits[:, win.row : win.row_end, win.col : win.col_end].copy())
        max_band_rows = max(max_band_rows, acc.scores.shape[1])
    put(acc.finish())
    assert max_band_rows <= tile  # bounded: never more than one tile of rows held
    return out


@pytest.mark.parametrize("mode", ["smooth", "reference"])
def test_accumulator_reproduces_consistent_logits(mode: str) -> None:
    # When every window sees the same per-pixel logits, any weighted blend must give their argmax.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 70, 50)).astype(np.float32)
    labels = _run_accumulator(mode, Window(0, 0, 70, 50), 16, 12, logits)
    np.testing.assert_array_equal(labels, logits.argmax(0))


def test_accumulator_reference_averages_logits() -> None:
    # Two windows along x overlap on columns 4..8: one says class 0 by +3, the other class 1 by +1 -> mean says 0.
    acc = BandAccumulator(Window(0, 0, 1, 12), 2, 8, "reference")
    acc.add(Window(0, 0, 1, 8), np.stack([np.full((1, 8), 3.0), np.zeros((1, 8))]).astype(np.float32))
    acc.add(Window(0, 4, 1, 8), np.stack([np.zeros((1, 8)), np.full((1, 8), 1.0)]).astype(np.float32))
    rows = acc.finish()
    assert rows is not None
    assert rows.labels.tolist() == [[0] * 8 + [1] * 4]
    # confidence at an overlap pixel = softmax of the mean logits (1.5, 0.5)
    assert rows.confidence[0, 5] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-5)


def test_accumulator_masks_invalid_pixels() -> None:
    acc = BandAccumulator(Window(0, 0, 2, 2), 2, 2, "smooth")
    valid = np.array([[True, False], [True, True]])
    acc.add(Window(0, 0, 2, 2), np.zeros((2, 2, 2), np.float32), valid)
    rows = acc.finish()
    assert rows is not None and rows.labels[0, 1] == LABEL_NODATA and rows.confidence[0, 1] == -1.0
    assert rows.labels[1, 1] == 0


@pytest.mark.parametrize("mode", ["smooth", "reference"])
def test_column_chunks_do_not_change_the_result(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finalising and shifting the band a few columns at a time gives exactly the one-chunk result."""
    from engine import blending

    rng = np.random.default_rng(0)
    region = Window(row=0, col=0, height=45, width=50)
    windows = windows_for_region(45, 50, 16, 12, region)
    logits = [rng.normal(size=(3, w.height, w.width)).astype(np.float32) for w in windows]

    def run(chunk: int) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setattr(blending, "COLUMN_CHUNK", chunk)
        acc = BandAccumulator(region, 3, 16, mode)
        labels, conf = np.zeros((45, 50), np.uint8), np.zeros((45, 50), np.float32)
        row = windows[0].grid_row
        for w, out in zip(windows, logits, strict=True):
            if w.grid_row != row:
                released = acc.advance_to(w.row)
                if released is not None:
                    labels[released.row : released.row + len(released.labels)] = released.labels
                    conf[released.row : released.row + len(released.labels)] = released.confidence
                row = w.grid_row
            acc.add(w, out)
        done = acc.finish()
        assert done is not None
        labels[done.row :], conf[done.row :] = done.labels, done.confidence
        return labels, conf

    whole, chunked = run(10**6), run(7)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    assert len(np.unique(whole[0])) == 3
