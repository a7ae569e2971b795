"""The torchvision/timm import shim (ENVIRONMENT.md pitfall 2). Each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_timm_imports_after_shim() -> None:
    proc = _run(
        """
        from engine._torch_compat import ensure_torchvision_importable
        state = ensure_torchvision_importable()
        import timm, torch
        m = timm.create_model("resnet18", num_classes=3).eval()
        assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
        print(state)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() in ("native", "fallback")


def test_shim_does_nothing_when_ops_exist() -> None:
    """If torchvision's ops are already registered (a working extension), the shim must not define anything."""
    proc = _run(
        """
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from engine import _torch_compat
        assert _torch_compat.ensure_torchvision_importable() == "native"
        assert _torch_compat._fallback_library is None
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_shim_is_idempotent() -> None:
    proc = _run(
        """
        from engine._torch_compat import ensure_torchvision_importable as f
        a = f(); b = f()
        assert a == b, (a, b)
        import torchvision
        print(a)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_compile_cache_is_persistent_unless_chosen() -> None:
    """In a fresh interpreter: importing engine.models puts torch.compile's cache under ~/.cache (default /tmp)."""
    code = "import os; import engine.models; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == os.path.join(os.path.expanduser("~"), ".cache", "rsp_segmentation", "inductor")
    env["TORCHINDUCTOR_CACHE_DIR"] = "/somewhere/chosen"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "/somewhere/chosen"
