"""The seed comparison's own logic: mosaic, ratio of medians, label agreement, run order, goals, skipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import seed_compare as sc


def _tiles(side: int = 4) -> list[np.ndarray]:
    return [np.full((side, side, 3), k, np.uint8) for k in (10, 20, 30, 40)]


def test_mosaic_places_the_four_tiles_2x2() -> None:
    m = sc.build_mosaic(_tiles(), 8)
    assert m.shape == (8, 8, 3) and m.dtype == np.uint8
    assert (m[:4, :4] == 10).all() and (m[:4, 4:] == 20).all() and (m[4:, :4] == 30).all() and (m[4:, 4:] == 40).all()


def test_mosaic_grows_by_mirroring_and_crops() -> None:
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (4, 4, 3), dtype=np.uint8) for _ in range(4)]
    base = sc.build_mosaic(tiles, 8)
    big = sc.build_mosaic(tiles, 20)
    assert big.shape == (20, 20, 3)
    np.testing.assert_array_equal(big[:8, :8], base)
    np.testing.assert_array_equal(big[:8, 8:16], base[:, ::-1])  # mirrored copy: no new seam
    np.testing.assert_array_equal(big[8:16, :8], base[::-1])
    np.testing.assert_array_equal(sc.build_mosaic(tiles, 5), base[:5, :5])


def test_mosaic_refuses_unequal_tiles() -> None:
    with pytest.raises(ValueError, match="four equal square tiles"):
        sc.build_mosaic([*_tiles()[:3], np.zeros((4, 5, 3), np.uint8)], 8)


def test_ratio_of_medians_is_seed_over_engine() -> None:
    assert sc.ratio_of_medians([50.0, 48.0, 100.0], [40.0, 25.0, 20.0]) == pytest.approx(50.0 / 25.0)
    assert sc.ratio_of_medians([60.0, 40.0], [100.0, 60.0]) == pytest.approx(50.0 / 80.0)  # even count: the mean of two


def test_label_agreement_over_all_and_confident_pixels() -> None:
    seed = np.array([[0, 1], [2, 3]], np.uint8)
    ours = np.array([[0, 1], [2, 0]], np.uint8)  # differs where the seed's margin is smallest
    margin = np.array([[4.0, 3.0], [2.0, 0.1]], np.float32)
    a = sc.label_agreement(ours, seed, margin)
    assert a["all"] == pytest.approx(0.75) and a["differing_pixels"] == 1
    assert a["confident"] == 1.0 and a["confident_pixels"] == 0.5  # margin ≥ its median (2.5)
    assert a["margin_threshold"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="shapes differ"):
        sc.label_agreement(ours[:1], seed, margin)


def test_rounds_rotate_and_round_zero_runs_the_seed_first() -> None:
    assert sc.rotated(sc.MODES, 0) == ["seed", "reference", "default"]
    assert sc.rotated(sc.MODES, 1) == ["reference", "default", "seed"]
    assert sc.rotated(sc.MODES, 3) == sc.rotated(sc.MODES, 0)


def test_goal_notes() -> None:
    assert sc.goal_note(2048, "reference", 1.3) == "goal ≥ 1.3×: met"
    assert sc.goal_note(2048, "default", 1.5) == "goal ≥ 2.0×: missed by 25 %"
    assert sc.goal_note(4096, "default", 2.6) == "goal ≥ 2.5×: met"
    assert sc.goal_note(1024, "default", 1.0) == ""
    assert sc.goal_note(2048, "exact", 1.2) == "goal ≥ 1.3×: missed by 8 %"  # judged as the reference mode


def test_exact_mode_rows_get_their_own_table() -> None:
    row = {"arch": "rsp_vitaev2_s", "size": 2048, "windows": 25, "seed_s": [50.0, 52.0]}
    mode = {"engine_s": [40.0], "ratio_of_medians": 1.275, "agreement": 1.0, "differing_pixels": 0,
            "agreement_confident": 1.0, "precision": "fp32", "compiled": False}  # fmt: skip
    results = {"rounds": 1, "machine": "cpu", "threads": 2, "load_min": 0.0, "load_max": 1.0}
    plain = sc.table({**results, "rows": [{**row, "reference": mode, "default": mode}]})
    assert "--exact" not in plain
    text = sc.table({**results, "rows": [{**row, "reference": mode, "default": mode, "exact": mode}]})
    line = text.splitlines()[-1]
    assert "--exact --blend reference --precision fp32" in text
    assert line.startswith("| rsp_vitaev2_s | 2048²") and "1.27× (goal ≥ 1.3×: missed by 2 %)" in line
    assert "100.000 % (0 px differ)" in line
    assert sc.equal_share({"agreement": 1 - 9 / 4_194_304, "differing_pixels": 9}) == "< 100 % (9 px differ)"
    assert sc.equal_share({"agreement": 0.7754, "differing_pixels": 942_000}) == "77.540 % (942000 px differ)"


def test_missing_seed_environment_is_one_line_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sc.main(["--shared", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("seed_compare: skipped:") and "seed_bench" in line and "\n" not in line
    (tmp_path / "seed_bench").mkdir()
    (tmp_path / "seed_bench" / "seed_slide.py").write_text("")
    for t in sc.TILES:
        (tmp_path / "data" / t).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / t).write_bytes(b"")
    missing = sc.missing_prerequisites(tmp_path, tmp_path / "no_python")
    assert missing is not None and sc.SETUP_HINT in missing
    assert not (tmp_path / "out").exists()
