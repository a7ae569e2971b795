"""The band-mapping rule: which raster bands feed a model's input bands. Standard library only.

The engine (:func:`engine.raster_io.select_bands`, hence ``python -m engine predict``) and the QGIS plugin's dialog
(``qgis_plugin.parameters.default_band_mapping``, in QGIS's own Python) both call :func:`map_bands`, so the mapping
the dialog shows is the one the engine would choose.

Rule:

1. An explicit mapping (``--bands``, 1-based, one raster band per model band) wins; its length and range are checked.
2. Otherwise each model band name (``red``/``green``/``blue``/``nir``/``gray``…, with the aliases of
   :data:`BAND_ALIASES`) is matched to the first raster band whose colour interpretation or description names it.
3. If a model band has no match and the raster has exactly as many non-alpha bands as the model needs, bands
   ``1..n`` (skipping alpha) are used in order, with a warning.
4. Anything else is a :class:`engine.errors.BandMismatchError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import BandMismatchError

log = logging.getLogger("engine")

# Colour interpretations (GDAL's GCI names, lower case; QGIS's colorInterpretationName gives the same words) that
# can name a model band. Others (``undefined``, ``hue``, ``cyan``…) name none.
COLOUR_NAMES = ("red", "green", "blue", "gray", "palette", "alpha")
ALPHA = "alpha"
BAND_ALIASES = {
    "nir": ("nir", "near-infrared", "nearinfrared", "near infrared", "infrared", "ir"),
    "gray": ("gray", "grey", "pan", "panchromatic"),
}


@dataclass(frozen=True)
class RasterBand:
    """What one raster band says about itself.

    Attributes:
        colour: colour interpretation name, any case (``"Red"``, ``"Gray"``, ``"Alpha"``, ``"Undefined"``…).
        description: band description, any case (e.g. ``"nir"``); empty when none.
    """

    colour: str = ""
    description: str = ""

    @property
    def names(self) -> set[str]:
        """Lower-case names this band answers to (description, and the colour when in :data:`COLOUR_NAMES`)."""
        colour = self.colour.strip().lower()
        names = {self.description.strip().lower(), colour if colour in COLOUR_NAMES else ""}
        return {n for n in names if n}

    @property
    def is_alpha(self) -> bool:
        """Whether the band is an alpha (transparency) band."""
        return self.colour.strip().lower() == ALPHA


def map_bands(
    model_bands: Sequence[str], raster_bands: Sequence[RasterBand], override: Sequence[int] | None = None
) -> list[int]:
    """1-based raster band numbers feeding ``model_bands`` in order (see the module docstring for the rule).

    Args:
        model_bands: the model file's input band names, e.g. ``("red", "green", "blue")``.
        raster_bands: one :class:`RasterBand` per raster band, in band order.
        override: an explicit mapping (``--bands``); None or empty for the default rule.

    Returns:
        One raster band number per model band.

    Raises:
        BandMismatchError: the override has the wrong length or a band outside the raster, or no default exists.
    """
    need, count = len(model_bands), len(raster_bands)
    if override:
        if len(override) != need:
            raise BandMismatchError(
                f"--bands lists {len(override)} bands but the model needs {need} ({', '.join(model_bands)})"
            )
        bad = [b for b in override if not 1 <= b <= count]
        if bad:
            raise BandMismatchError(f"--bands {bad} not in 1..{count} (the raster has {count} bands)")
        return list(override)
    chosen: list[int] = []
    for want in model_bands:
        aliases = set(BAND_ALIASES.get(want.lower(), (want.lower(),)))
        hit = [i + 1 for i, band in enumerate(raster_bands) if band.names & aliases]
        if not hit:
            break
        chosen.append(hit[0])
    if len(chosen) == need:
        return chosen
    data_bands = [i + 1 for i, band in enumerate(raster_bands) if not band.is_alpha]
    if len(data_bands) == need:
        log.warning(
            "band colour interpretation does not name the model's bands %s; using bands %s in order",
            list(model_bands),
            data_bands,
        )
        return data_bands
    raise BandMismatchError(
        f"the raster has {len(data_bands)} data bands but the model needs {need} ({', '.join(model_bands)}) and the "
        "colour interpretation does not say which is which"
    )
