#!/usr/bin/env python3
"""Build the installable QGIS plugin zip: ``python scripts/package_plugin.py [--out dist]`` (``make package``).

The zip holds one folder, ``rsp_segmentation/``, as QGIS's "Install from ZIP" expects:

- the plugin code (``qgis_plugin/**/*.py`` and its ``.ui``/``.png``/``.qml`` files);
- ``metadata.txt`` from the repository root with ``version=`` set to the project version (pyproject.toml);
- ``icon.png`` from ``resources/icons/``;
- ``engine/``: a copy of the pure-Python engine package (the plugin runs it as ``python -m engine`` with
  ``PYTHONPATH`` pointing at the plugin folder, see ``qgis_plugin/engine_locator.py``);
- ``training/``: a copy of the pure-Python training package next to it, found through the same ``PYTHONPATH``
  (the Train model dialog and the Processing algorithms run ``python -m training finetune|accuracy``);
- ``models/``: the bundled ``resources/models/*.rspmodel`` files, when present;
- ``README.md`` and ``LICENSE`` when present.

Standard library only, so it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import configparser
import io
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "rsp_segmentation"
CODE_SUFFIXES = (".py", ".ui", ".png", ".svg", ".qml")
SKIP_PARTS = ("__pycache__", ".pytest_cache")


def project_version(root: Path = ROOT) -> str:
    """The ``version`` of ``[project]`` in pyproject.toml."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    if match is None:
        raise SystemExit("pyproject.toml has no [project] version")
    return match.group(1)


def metadata_text(root: Path = ROOT, version: str | None = None) -> str:
    """metadata.txt with ``version`` filled in (other lines kept as written)."""
    version = version or project_version(root)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep QGIS's camelCase keys
    parser.read(root / "metadata.txt", encoding="utf-8")
    parser["general"]["version"] = version
    buffer = io.StringIO()
    parser.write(buffer)
    return buffer.getvalue()


def _copy_tree(src: Path, dest: Path, suffixes: tuple[str, ...]) -> None:
    for path in sorted(src.rglob("*")):
        if path.is_dir() or any(part in SKIP_PARTS for part in path.parts) or path.suffix not in suffixes:
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def assemble(dest_parent: Path, root: Path = ROOT) -> Path:
    """Write the plugin folder ``dest_parent/rsp_segmentation`` (replacing it) and return its path."""
    folder = dest_parent / PLUGIN_NAME
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _copy_tree(root / "qgis_plugin", folder, CODE_SUFFIXES)
    _copy_tree(root / "engine", folder / "engine", (".py",))
    _copy_tree(root / "training", folder / "training", (".py",))
    (folder / "metadata.txt").write_text(metadata_text(root), encoding="utf-8")
    shutil.copy2(root / "resources" / "icons" / "icon.png", folder / "icon.png")
    models = sorted((root / "resources" / "models").glob("*.rspmodel"))
    if models:
        (folder / "models").mkdir()
        for model in models:
            shutil.copy2(model, folder / "models" / model.name)
    for name in ("README.md", "LICENSE"):
        if (root / name).is_file():
            shutil.copy2(root / name, folder / name)
    return folder


def build_zip(out_dir: Path, root: Path = ROOT) -> Path:
    """Build ``out_dir/rsp_segmentation.zip`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / "_staging"
    folder = assemble(staging, root)
    zip_path = out_dir / f"{PLUGIN_NAME}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(staging).as_posix())
    shutil.rmtree(staging)
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    zip_path = build_zip(args.out)
    with zipfile.ZipFile(zip_path) as archive:
        count = len(archive.namelist())
    print(f"{zip_path} ({zip_path.stat().st_size / 1e6:.2f} MB, {count} files, version {project_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
