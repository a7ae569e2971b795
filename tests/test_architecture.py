"""Architecture rules enforced as tests: the one-way import rule and a valid plugin metadata.txt."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A meta-path finder that makes any import of qgis or PyQt5 fail, then imports every module of the package.
_BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("qgis", "PyQt5", "PyQt6", "sip"):
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    package = importlib.import_module(sys.argv[1])
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("qgis", "PyQt5", "PyQt6"))
    assert not leaked, leaked
    print(len(names))
    """
)


@pytest.mark.parametrize("package", ["engine", "training"])
def test_package_imports_without_qgis_or_qt(package: str) -> None:
    if not (ROOT / package / "__init__.py").exists():
        pytest.fail(f"package {package} is missing")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT_SCRIPT, package],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) >= 1


def test_blocker_really_blocks() -> None:
    """The check above would be worthless if the blocker let qgis through: prove it refuses a direct import."""
    script = _BLOCKED_IMPORT_SCRIPT.replace("package = importlib", "import qgis.core\npackage = importlib")
    proc = subprocess.run(
        [sys.executable, "-c", script, "engine"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "blocked import of qgis" in proc.stderr


REQUIRED_METADATA = (
    "name",
    "qgisMinimumVersion",
    "qgisMaximumVersion",
    "version",
    "description",
    "about",
    "author",
    "email",
    "repository",
    "tracker",
    "homepage",
    "hasProcessingProvider",
)


def test_metadata_txt_is_valid() -> None:
    parser = configparser.ConfigParser()
    assert parser.read(ROOT / "metadata.txt", encoding="utf-8"), "metadata.txt missing"
    general = parser["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "3.99"
    assert general["hasProcessingProvider"].lower() in ("yes", "true")
    version = general["version"].split(".")
    assert len(version) == 3 and all(part.isdigit() for part in version)
    for key in ("repository", "tracker", "homepage"):
        assert general[key].startswith("https://"), key
    assert "@" in general["email"]
