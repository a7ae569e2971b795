"""The classes of a fine-tuned model: names, the label values that mean each, and colours.

Where they come from (decisions where the issue is silent):

- ``--classes classes.json`` gives order, names and colours: a list (or ``{"classes": [...]}``) of objects
  ``{"name": "building", "color": [220, 40, 40] or "#dc2828", "value": "bldg"}``; ``value`` (optional) is the label
  value that means the class when it differs from the name (a field value or a raster code). Label values not
  listed are *not trained on* (reported in a ``status`` event), so a class can be left out on purpose.
- Without it: the distinct label values, sorted (numerically when all are integers, else by name), named after the
  value, coloured from :data:`KNOWN_COLOURS` when the name is a common land-cover name, else from
  :data:`PALETTE` (20 colours chosen to be told apart).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import ParameterError

IGNORE = 255  # label value of unlabelled pixels in the label rasters; never a class
MAX_CLASSES = 254  # class ids 0..253 (255 is ignore/nodata in the outputs)

# Sasha Trubetskoy's 20 distinct colours, in his order of distinctness.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip
KNOWN_COLOURS: dict[str, tuple[int, int, int]] = {
    "building": (220, 40, 40),
    "buildings": (220, 40, 40),
    "roof": (220, 40, 40),
    "road": (150, 150, 150),
    "roads": (150, 150, 150),
    "impervious_surface": (200, 200, 200),
    "impervious": (200, 200, 200),
    "pavement": (200, 200, 200),
    "tree": (0, 140, 0),
    "trees": (0, 140, 0),
    "forest": (0, 110, 0),
    "woodland": (0, 110, 0),
    "low_vegetation": (150, 220, 90),
    "grass": (150, 220, 90),
    "meadow": (150, 220, 90),
    "cropland": (240, 220, 100),
    "crop": (240, 220, 100),
    "agriculture": (240, 220, 100),
    "water": (30, 110, 230),
    "bare_soil": (170, 120, 70),
    "bareland": (170, 120, 70),
    "bare": (170, 120, 70),
    "sand": (235, 210, 160),
    "car": (255, 200, 0),
    "vehicle": (255, 200, 0),
    "shadow": (40, 40, 40),
    "clutter": (255, 0, 255),
    "background": (0, 0, 0),
}


@dataclass(frozen=True)
class ClassTable:
    """Class ids ``0..K-1``: ``names[i]``, ``colors[i]``; ``codes`` maps a label value (as text) to its class id."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    codes: dict[str, int]

    def __post_init__(self) -> None:
        if len(self.names) != len(set(self.names)):
            raise ParameterError(f"class names must be unique, got {list(self.names)}")
        if len(self.names) > MAX_CLASSES:
            raise ParameterError(f"{len(self.names)} classes; at most {MAX_CLASSES} fit a uint8 class raster")

    @property
    def num_classes(self) -> int:
        """Number of classes (``K``)."""
        return len(self.names)

    def class_of(self, value: object) -> int | None:
        """Class id of a label value (field value or raster code), None when it is not a class."""
        return self.codes.get(value_key(value))


def value_key(value: object) -> str:
    """Label values compared as text: ``3``, ``3.0`` and ``"3"`` are the same value; names are stripped."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def sort_values(values: Iterable[str]) -> list[str]:
    """Numerically when every value is an integer, else alphabetically (case-insensitive)."""
    vals = list(values)
    if vals and all(_is_int(v) for v in vals):
        return sorted(vals, key=int)
    return sorted(vals, key=lambda v: (v.lower(), v))


def default_colors(names: Iterable[str]) -> tuple[tuple[int, int, int], ...]:
    """A colour per name: :data:`KNOWN_COLOURS` for common land-cover names, else the next unused :data:`PALETTE`."""
    names = list(names)
    taken: set[tuple[int, int, int]] = set()
    out: list[tuple[int, int, int] | None] = []
    for n in names:
        c = KNOWN_COLOURS.get(n.strip().lower().replace(" ", "_").replace("-", "_"))
        if c is not None and c in taken:
            c = None
        if c is not None:
            taken.add(c)
        out.append(c)
    free = [c for c in PALETTE if c not in taken]
    k = 0
    result = []
    for c in out:
        if c is None:
            base = free[k % len(free)]
            shade = k // len(free)  # past 20 classes: darker variants
            c = tuple(max(0, v - 60 * shade) for v in base)  # type: ignore[assignment]
            k += 1
        result.append(c)
    return tuple(result)  # type: ignore[arg-type]


def _parse_color(value: object, name: str) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
        h = value.strip().lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (
        isinstance(value, list | tuple)
        and len(value) in (3, 4)
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ParameterError(f"class {name!r}: colour must be [r, g, b] in 0..255 or '#rrggbb', got {value!r}")


def read_classes_json(path: str) -> list[dict[str, object]]:
    """The entries of a ``--classes`` file (see the module docstring)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ParameterError(f"cannot read --classes {path}: {exc}", 'give a JSON list of {"name", "color"}') from exc
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) and "name" in e for e in data):
        raise ParameterError(
            f'--classes {path} must be a non-empty JSON list of objects with a "name" (optional "color", "value")'
        )
    return data


def build_table(found: Iterable[str], entries: list[dict[str, object]] | None = None) -> ClassTable:
    """The class table from the label values ``found`` and optional ``--classes`` entries.

    Raises:
        ParameterError: fewer than two classes, or ``--classes`` names none of the label values.
    """
    found = list(dict.fromkeys(value_key(v) for v in found))
    if entries is None:
        names = tuple(sort_values(found))
        table = ClassTable(names, default_colors(names), {n: i for i, n in enumerate(names)})
    else:
        names = tuple(str(e["name"]).strip() for e in entries)
        defaults = default_colors(names)
        colors = tuple(
            _parse_color(e["color"], names[i]) if e.get("color") is not None else defaults[i]
            for i, e in enumerate(entries)
        )
        codes = {value_key(e.get("value", e["name"])): i for i, e in enumerate(entries)}
        table = ClassTable(names, colors, codes)
        if not set(codes) & set(found):
            raise ParameterError(
                f"none of the --classes values {sorted(codes)} occur in the labels (values found: "
                f"{sort_values(found)[:20]})",
                'make each class\'s "value" (or "name") equal to a value of the class field',
            )
    present = [n for n in table.codes if n in set(found)]
    if len(present) < 2:
        raise ParameterError(
            f"the labels hold {len(present)} class(es) ({', '.join(present) or 'none'}); a model needs at least two",
            "digitise polygons of at least one more class (e.g. what is *not* your target: background)",
        )
    return table
