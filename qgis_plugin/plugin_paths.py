"""Where the plugin's own files are: its folder, its icon and its bundled models, installed or in a source checkout.

Standard library only, so any plugin module imports it without an import cycle. Installed from the zip, the files
sit in the plugin folder (``rsp_segmentation/icon.png``, ``rsp_segmentation/models/``); in the repository they are
under ``resources/`` next to ``qgis_plugin/`` (``scripts/package_plugin.py`` copies one layout into the other).
"""

from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REPO_RESOURCES_DIR = PLUGIN_DIR.parent / "resources"
ICON_NAME = "icon.png"


def icon_path() -> str:
    """The plugin icon.

    Returns:
        ``icon.png`` in the installed plugin folder, else ``resources/icons/icon.png`` in the repository, else ``""``
        (QIcon then draws nothing).
    """
    for candidate in (PLUGIN_DIR / ICON_NAME, REPO_RESOURCES_DIR / "icons" / ICON_NAME):
        if candidate.is_file():
            return str(candidate)
    return ""


def bundled_models_dirs() -> list[Path]:
    """Folders of the models shipped with the plugin: ``models/`` when installed, ``resources/models/`` in the repo."""
    return [PLUGIN_DIR / "models", REPO_RESOURCES_DIR / "models"]
