"""Security: no shell strings anywhere, model metadata never chooses where files go, user paths stay literal."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from conftest import ROOT, real_pixels, run_engine, write_model, write_raster

PACKAGES = ("engine", "training", "qgis_plugin", "bench", "scripts")


def _calls(tree: ast.AST):  # type: ignore[no-untyped-def]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_no_shell_strings_in_the_code() -> None:
    """No ``shell=True``, ``os.system``/``os.popen``, or QProcess started from one command string."""
    offenders = []
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 40
    for path in files:
        for node, owner, name in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):  # fmt: skip
                offenders.append(f"{where} shell=")
            if owner == "os" and name in ("system", "popen"):
                offenders.append(f"{where} os.{name}")
            if name in ("start", "startDetached", "execute") and len(node.args) == 1:
                arg = node.args[0]
                if isinstance(arg, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    offenders.append(f"{where} {name}(<one command string>)")
    assert offenders == []


def test_model_metadata_never_names_where_files_go(tmp_path: Path) -> None:
    """Class names, dataset and description that look like paths are only text: the run writes the requested files
    and nothing else, anywhere."""
    evil = tmp_path / "evil"
    names = (str(evil / "a.tif"), "../../b", "c; touch " + str(evil / "pwned"))
    model = write_model(tmp_path / "m.rspmodel", class_names=names, dataset=str(evil / "d.gpkg"),
                        description=f"--output {evil / 'e.tif'}")  # fmt: skip
    raster = write_raster(tmp_path / "in.tif", real_pixels(70, 90))
    out = tmp_path / "out"
    out.mkdir()
    before = set(os.listdir(tmp_path))
    result = run_engine(["predict", "--model", str(model), "--input", str(raster), "--output", str(out / "c.tif"),
                         "--vector", str(out / "p.gpkg"), "--threads", "1"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["c.tif", "c.tif.aux.xml", "p.gpkg"]  # GDAL keeps category names in .aux.xml
    assert set(os.listdir(tmp_path)) == before and not evil.exists()


def test_shell_metacharacters_in_a_user_path_stay_literal(tmp_path: Path) -> None:
    """An output name with ``;`` and ``$( )`` is one argument: that file is written and no command runs."""
    model = write_model(tmp_path / "m.rspmodel")
    raster = write_raster(tmp_path / "in.tif", real_pixels(70, 90))
    weird = tmp_path / "x; touch PWNED $(touch PWNED2) #.tif"
    result = run_engine(["predict", "--model", str(model), "--input", str(raster), "--output", str(weird),
                         "--threads", "1"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert weird.is_file()
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
