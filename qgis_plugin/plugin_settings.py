"""The plugin's remembered settings (QgsSettings under ``rsp_segmentation/``)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsSettings

from .engine_locator import default_interpreter

SETTINGS_GROUP = "rsp_segmentation"


def _key(name: str) -> str:
    return f"{SETTINGS_GROUP}/{name}"


def get_value(name: str, default: Any = None, value_type: type | None = None) -> Any:
    """The setting ``rsp_segmentation/<name>``, or ``default``; converted to ``value_type`` when given."""
    settings = QgsSettings()
    if value_type is None:
        return settings.value(_key(name), default)
    return settings.value(_key(name), default, type=value_type)


def set_value(name: str, value: Any) -> None:
    """Remember ``value`` as the setting ``rsp_segmentation/<name>``."""
    QgsSettings().setValue(_key(name), value)


def interpreter() -> str:
    """The engine's Python interpreter: the saved setting, else :func:`engine_locator.default_interpreter`."""
    saved = str(get_value("interpreter", "") or "").strip()
    return saved or default_interpreter()


def set_interpreter(path: str) -> None:
    """Save the engine's Python interpreter (an empty path restores the default)."""
    set_value("interpreter", path.strip())
