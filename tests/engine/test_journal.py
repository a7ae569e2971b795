"""Resume bookkeeping without the network: restart windows, row clipping, the journal file, the lock, OOM halving.

The invariant that makes a resumed run identical is tested on the real accumulator with random logits: the rows at
and below ``rows_done`` come out bit-identical whether the run started at the top or at :func:`windows_to_run`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine import journal
from engine.blending import BandAccumulator, FinishedRows
from engine.resources import AdaptiveBatches, DiskSpaceError, OutOfMemoryError, check_disk_space
from engine.resume import keep_rows, windows_to_run
from engine.tiling import Window, windows_for_region


def run_rows(region: Window, windows: list[Window], logits: dict, first: int, mode: str) -> np.ndarray:
    """The labels+confidence rows ``first:`` of ``region`` produced from ``windows`` (as engine.predict.run_region)."""
    acc = BandAccumulator(region, 3, 64, mode, top=max(region.row, windows[0].row))
    out: list[FinishedRows] = []

    def put(rows: FinishedRows | None) -> None:
        kept = keep_rows(rows, first)
        if kept is not None:
            out.append(kept)

    current = windows[0].grid_row
    for w in windows:
        if w.grid_row != current:
            put(acc.advance_to(w.row))
            current = w.grid_row
        acc.add(w, logits[w])
    put(acc.finish())
    assert out[0].row == first
    return np.concatenate([np.concatenate([r.labels.astype(np.float32), r.confidence], axis=1) for r in out])


@pytest.mark.parametrize("mode", ["smooth", "reference"])
@pytest.mark.parametrize(("stride", "region"), [(48, Window(0, 0, 300, 130)), (20, Window(37, 11, 230, 90))])
def test_resumed_rows_are_bit_identical(mode: str, stride: int, region: Window) -> None:
    rng = np.random.default_rng(0)
    windows = windows_for_region(300, 130, 64, stride, region)
    logits = {w: rng.normal(size=(3, w.height, w.width)).astype(np.float32) * 5 for w in windows}
    whole = run_rows(region, windows, logits, region.row, mode)
    for rows_done in range(region.row + 1, region.row_end, 17):
        resumed = windows_to_run(windows, rows_done)
        assert len(resumed) <= len(windows)
        assert len(resumed) < len(windows) or rows_done < region.row + 64  # fewer once a window lies above it
        assert all(w.row_end <= rows_done for w in windows if w not in resumed)  # skipped: no effect below
        part = run_rows(region, resumed, logits, rows_done, mode)
        np.testing.assert_array_equal(part, whole[rows_done - region.row :])


def test_windows_to_run_when_everything_is_done() -> None:
    windows = windows_for_region(100, 100, 64, 48, Window(0, 0, 100, 100))
    assert windows_to_run(windows, 100) == []
    assert windows_to_run(windows, 0) == windows


def test_keep_rows_clips_what_is_written() -> None:
    rows = FinishedRows(10, np.arange(5)[:, None].astype(np.uint8), np.zeros((5, 1), np.float32))
    assert keep_rows(rows, 8) is rows
    kept = keep_rows(rows, 12)
    assert kept is not None and kept.row == 12 and kept.labels[:, 0].tolist() == [2, 3, 4]
    assert keep_rows(rows, 15) is None and keep_rows(None, 3) is None


def test_journal_round_trip_and_mismatches(tmp_path) -> None:
    out = str(tmp_path / "classes.tif")
    chunk = journal.chunk_path(out, 0, 256)
    open(chunk, "wb").close()
    j = journal.Journal.create(journal.journal_path(out), {"tile": 64, "bands": [1, 2, 3]}, (0, 512))
    assert not j.has_rows
    with pytest.raises(ValueError, match="do not continue"):
        j.record_chunk(128, 256, {"labels": chunk})  # a gap: never recorded
    j.record_chunk(0, 256, {"labels": chunk})
    again = journal.Journal.load(journal.journal_path(out))
    assert again.rows_done == 256 and again.has_rows and again.files == [chunk] and not again.committing
    assert again.mismatches({"tile": 96, "bands": [1, 2, 3]}) == ["tile: was 64, now 96"]
    assert journal.unfinished_run(out) == {
        "journal": journal.journal_path(out), "rows_done": 256, "rows_total": 512, "fraction": 0.5,
    }  # fmt: skip
    debris = [journal.part_path(journal.chunk_path(out, 256, 512)), journal.chunk_path(out, 256, 512)]
    for path in debris:
        open(path, "wb").close()
    assert journal.remove_debris([out]) == sorted(debris)  # not listed: removed; the listed chunk stays
    assert os.path.isfile(chunk)
    os.remove(chunk)
    assert journal.unfinished_run(out) is None  # a chunk lost: nothing to resume
    assert journal.discard(out) == [journal.journal_path(out)]
    assert os.listdir(tmp_path) == []


def test_damaged_journal_is_refused(tmp_path) -> None:
    path = journal.journal_path(str(tmp_path / "x.tif"))
    with open(path, "w") as f:
        f.write('{"format": "something else"}')
    with pytest.raises(journal.ResumeError, match="not a resume journal"):
        journal.Journal.load(path)
    assert journal.unfinished_run(str(tmp_path / "x.tif")) is None


def test_one_run_per_output(tmp_path) -> None:
    a, b = str(tmp_path / "a.tif"), str(tmp_path / "b.tif")
    with journal.OutputLock([a, str(tmp_path / "a.gpkg")]):
        with pytest.raises(journal.RunLockedError, match=r"another run is writing .*a\.tif.*process"):
            journal.OutputLock([a]).__enter__()
        with journal.OutputLock([b]):  # another output: no wait
            pass
        assert journal.remove_stale_locks([a]) == []  # held: not stale
    assert os.listdir(tmp_path) == []
    with journal.OutputLock([a]):
        pass


def test_stale_lock_is_removed(tmp_path) -> None:
    a = str(tmp_path / "a.tif")
    open(journal.lock_path(a), "w").close()  # left by a killed run
    assert journal.remove_stale_locks([a]) == [journal.lock_path(a)]


def test_out_of_memory_halves_and_keeps_results() -> None:
    calls: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(x) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2

    events: list[dict] = []
    run = AdaptiveBatches(forward, 8, events.append, 512, "cuda:0")
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(run(x), x * 2)
    assert [e["batch_size"] for e in events] == [4, 2] and run.size == 2
    assert calls == [8, 4, 2, 2, 2, 2]  # every pass padded to the current size (7 windows: 2+2+2+1 padded)
    assert all(e["event"] == "warning" for e in events)


def test_one_window_that_does_not_fit() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    run = AdaptiveBatches(forward, 1, lambda e: None, 512, "cpu")
    with pytest.raises(OutOfMemoryError, match="512×512 window") as info:
        run(np.zeros((1, 3), np.float32))
    assert "--tile 256" in info.value.hint


def test_other_errors_are_not_retried() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveBatches(forward, 4, lambda e: None, 64, "cpu")(np.zeros((4, 1), np.float32))


def test_disk_space_check(tmp_path) -> None:
    out = str(tmp_path / "a.tif")
    check_disk_space({"labels": (out, 1000)})
    with pytest.raises(DiskSpaceError, match=f"not enough free space in {tmp_path}: .*labels 1024.0 TiB"):
        check_disk_space({"labels": (out, 1 << 50)})
