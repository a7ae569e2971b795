"""The band-mapping rule (engine.bands) and the engine modules the QGIS plugin imports in QGIS's own Python."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.bands import RasterBand, map_bands
from engine.errors import BandMismatchError

ROOT = Path(__file__).resolve().parents[2]
RGB = ("red", "green", "blue")


def bands(*colours: str, descriptions: tuple[str, ...] = ()) -> list[RasterBand]:
    descriptions = descriptions or ("",) * len(colours)
    return [RasterBand(c, d) for c, d in zip(colours, descriptions, strict=True)]


def test_colour_interpretation_any_case_and_order() -> None:
    assert map_bands(RGB, bands("Red", "Green", "Blue", "Alpha")) == [1, 2, 3]
    assert map_bands(RGB, bands("blue", "green", "red")) == [3, 2, 1]


def test_descriptions_and_aliases() -> None:
    irrg = ("nir", "red", "green")
    described = bands("Undefined", "Undefined", "Undefined", descriptions=("Green", "Red", "Infrared"))
    assert map_bands(irrg, described) == [3, 2, 1]
    assert map_bands(("gray",), bands("Undefined", descriptions=("panchromatic",))) == [1]
    assert map_bands(("gray",), bands("Gray")) == [1]


def test_unnamed_bands_in_order_only_when_the_count_matches() -> None:
    assert map_bands(RGB, bands("Undefined", "Undefined", "Undefined", "Alpha")) == [1, 2, 3]
    assert map_bands(RGB, bands("Hue", "Saturation", "Lightness")) == [1, 2, 3]  # not colour names of bands
    with pytest.raises(BandMismatchError, match="4 data bands but the model needs 3"):
        map_bands(RGB, bands("Undefined", "Undefined", "Undefined", "Undefined"))
    with pytest.raises(BandMismatchError, match="2 data bands"):
        map_bands(RGB, bands("Gray", "Alpha", "Undefined"))


def test_override_wins_and_is_checked() -> None:
    assert map_bands(RGB, bands("Red", "Green", "Blue"), [3, 2, 1]) == [3, 2, 1]
    with pytest.raises(BandMismatchError, match="lists 2 bands but the model needs 3"):
        map_bands(RGB, bands("Red", "Green", "Blue"), [1, 2])
    with pytest.raises(BandMismatchError, match=r"\[7\] not in 1..3"):
        map_bands(RGB, bands("Red", "Green", "Blue"), [1, 2, 7])


def test_plugin_default_is_the_engine_rule() -> None:
    from qgis_plugin.parameters import default_band_mapping

    assert default_band_mapping(RGB, ["Red", "Green", "Blue", "Alpha"]) == (1, 2, 3)
    assert default_band_mapping(("nir", "red", "green"), ["Undefined"] * 3) == (1, 2, 3)
    assert default_band_mapping(RGB, ["Undefined"] * 4) is None  # the engine would refuse: the analyst chooses


# The plugin imports these in QGIS's own Python, which may lack numpy, GDAL and torch.
_STDLIB_ONLY = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numpy", "osgeo", "torch", "timm", "safetensors", "qgis", "PyQt5"):
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    import engine.atomic, engine.bands, engine.errors, engine.events, engine.model_file  # noqa: E401
    print("ok")
    """
)


def test_plugin_side_engine_modules_need_only_the_standard_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STDLIB_ONLY], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
