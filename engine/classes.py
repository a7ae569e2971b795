"""Class names, palettes, ignore indices, titles and model-file metadata presets of the RSP data sets (RSP_SPEC §2, §3,
§5): the one place these facts are stated. The engine's importer and the training package (``training.config``'s
presets, ``training.datasets``' classes) read them from here.

The names and colours are those RSP's dataset classes store in checkpoint ``meta`` (so a released checkpoint and a
model made here agree). Note RSP's iSAID palette swaps the colours of ``storage_tank`` (2) and ``roundabout`` (12)
relative to the official iSAID palette; indices are right, only the drawing colours differ. We keep RSP's colours so
outputs look like the paper's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POTSDAM_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
POTSDAM_PALETTE = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
POTSDAM_IGNORE_INDEX = 5  # clutter: ignored in loss and metrics; the 5-class head never predicts it

ISAID_CLASSES = (
    "background",
    "ship",
    "storage_tank",
    "baseball_diamond",
    "tennis_court",
    "basketball_court",
    "ground_Track_Field",
    "bridge",
    "large_Vehicle",
    "small_Vehicle",
    "helicopter",
    "swimming_pool",
    "roundabout",
    "soccer_ball_field",
    "plane",
    "harbor",
)
ISAID_PALETTE = (
    (0, 0, 0),
    (0, 0, 63),
    (0, 191, 127),
    (0, 63, 0),
    (0, 63, 127),
    (0, 63, 191),
    (0, 63, 255),
    (0, 127, 63),
    (0, 127, 127),
    (0, 0, 127),
    (0, 0, 191),
    (0, 0, 255),
    (0, 63, 63),
    (0, 127, 191),
    (0, 127, 255),
    (0, 100, 155),
)
ISAID_IGNORE_INDEX = 255

RSP_MEAN = (123.675, 116.28, 103.53)  # 0..255 units, applied after BGR→RGB (so to the file's band order)
RSP_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class DatasetPreset:
    """What a model file needs to know about the data its network was trained on.

    Attributes:
        name: preset key. dataset: human-readable data set name.
        class_names / colors: the head's classes (``num_classes`` of them; the Potsdam head has 5, clutter excluded).
        bands: input band names in network order. gsd_m: metres per pixel (None: the data has no single GSD).
        tile_size / stride: sliding window used by the seed's test config. ignore_index: label ignored in training.
        metric: the headline metric name reported for this data set.
    """

    name: str
    dataset: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    bands: tuple[str, ...]
    gsd_m: float | None
    ignore_index: int | None
    metric: str
    tile_size: int = 512
    stride: int = 384
    mean: tuple[float, ...] = RSP_MEAN
    std: tuple[float, ...] = RSP_STD
    notes: str = ""

    def model_info_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`engine.model_file.ModelInfo` (everything but arch, weights and provenance)."""
        same_name = ("class_names", "colors", "bands", "mean", "std", "gsd_m", "tile_size", "stride", "ignore_index")
        return {
            **{name: getattr(self, name) for name in same_name},
            "num_classes": len(self.class_names),
            "value_range": (0.0, 255.0),  # the data sets' images are 8-bit
            "dataset": self.dataset,
        }


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "potsdam": DatasetPreset(
        name="potsdam",
        dataset="ISPRS Potsdam, 3_Ortho_IRRG (NIR-R-G), 5_Labels_all, clutter ignored",
        class_names=POTSDAM_CLASSES[:5],
        colors=POTSDAM_PALETTE[:5],
        bands=("nir", "red", "green"),
        gsd_m=0.05,
        ignore_index=POTSDAM_IGNORE_INDEX,
        metric="mF1",
        notes="RSP's Potsdam models read NIR-R-G orthophotos; feed an RGB raster only with a model trained on RGB.",
    ),
    "isaid": DatasetPreset(
        name="isaid",
        dataset="iSAID (DOTA-v1.0 images, iSAID masks), 16 classes incl. background",
        class_names=ISAID_CLASSES,
        colors=ISAID_PALETTE,
        bands=("red", "green", "blue"),
        gsd_m=None,
        ignore_index=ISAID_IGNORE_INDEX,
        metric="mIoU",
        notes="iSAID images come from many sensors at varying GSD (no single value): rasters are processed as is.",
    ),
}


def dataset_preset(name: str) -> DatasetPreset:
    """The preset called ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in DATASET_PRESETS:
        raise KeyError(f"unknown dataset preset {name!r}; valid: {', '.join(DATASET_PRESETS)}")
    return DATASET_PRESETS[name]
