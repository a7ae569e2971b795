"""Environment self-check: ``python -m engine.selfcheck [--json]``.

Prints the versions of Python, QGIS, GDAL, numpy, torch, timm and whether CUDA is available. Exit status 1 when a
package the engine needs (numpy, GDAL, torch, timm) is missing; QGIS is reported but optional (the engine runs
without it). The QGIS plugin's "Check environment" button runs this in the configured interpreter with ``--json``.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
from typing import Any

REQUIRED = ("numpy", "gdal", "torch", "timm")
FIX_COMMAND = "make setup  (or: python3 -m pip install --find-links /opt/wheels -r requirements.txt -c constraints.txt)"


def _version(module: str, attribute: str = "__version__") -> str | None:
    """``module``'s version (``attribute`` may be dotted), or None when it cannot be imported."""
    try:
        value: Any = importlib.import_module(module)
    except ImportError:
        return None
    for name in attribute.split("."):
        value = getattr(value, name)
    return str(value)


def collect() -> dict[str, Any]:
    """Return a dict of component name → version string (or None when missing) plus CUDA facts."""
    report: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    report["numpy"] = _version("numpy")
    report["gdal"] = _version("osgeo.gdal")
    report["qgis"] = _version("qgis.core", "Qgis.QGIS_VERSION")
    report["torch"] = _version("torch")
    report["cuda_available"] = False
    report["cuda_device"] = None
    if report["torch"] is not None:
        import torch

        report["cuda_available"] = bool(torch.cuda.is_available())
        report["cuda_device"] = torch.cuda.get_device_name(0) if report["cuda_available"] else None
        report["torch_threads"] = torch.get_num_threads()
        from engine._torch_compat import ensure_torchvision_importable

        report["torchvision_ops"] = ensure_torchvision_importable()
    report["timm"] = _version("timm")
    report["missing"] = [name for name in REQUIRED if report.get(name) is None]
    report["fix"] = FIX_COMMAND if report["missing"] else None
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the report (``--json``: one JSON object); exit code 1 when a required package is missing."""
    argv = sys.argv[1:] if argv is None else argv
    report = collect()
    if "--json" in argv:
        print(json.dumps(report))
    else:
        for key in ("python", "qgis", "gdal", "numpy", "torch", "timm", "cuda_available", "cuda_device"):
            value = report.get(key)
            shown = value if value is not None else ("MISSING" if key in REQUIRED else "-")
            print(f"{key:>15}: {shown}")
        if report["missing"]:
            print(f"missing: {', '.join(report['missing'])}. Fix: {FIX_COMMAND}")
    return 1 if report["missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
