"""The plugin's remembered settings (QgsSettings under ``rsp_segmentation/``)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsSettings

from .engine_locator import default_interpreter

SETTINGS_GROUP = "rsp_segmentation"


def _key(name: str) -> str:
    return f"{SETTINGS_GROUP}/{name}"


def get_value(name: str, default: Any = None, value_type: type | None = None) -> Any:
    settings = QgsSettings()
    if value_type is None:
        return settings.value(_key(name), default)
    return settings.value(_key(name), default, type=value_type)


def set_value(name: str, value: Any) -> None:
    QgsSettings().setValue(_key(name), value)


def interpreter() -> str:
    """The engine's Python interpreter: the saved setting, else :func:`engine_locator.default_interpreter`."""
    saved = str(get_value("interpreter", "") or "").strip()
    return saved or default_interpreter()


def set_interpreter(path: str) -> None:
    set_value("interpreter", path.strip())
