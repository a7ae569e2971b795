"""Our UperNets against logits computed by RSP's own code (golden values in ``data/reference_logits.json``).

The golden file was produced outside this repository by running RSP's reference backbones (``our_resnet.py``,
``swin_transformer.py``, ``ViTAE_Window_NoShift/``) with mmseg 0.21's ``UPerHead``/``FCNHead`` on mmcv 1.4.0's
``ConvModule``, ``EncoderDecoder.encode_decode``'s bilinear resize, the deterministic weights of :func:`_fill` and
the input below. Nothing in it comes from the code under test. At the time it was made our networks matched those
logits exactly (max |diff| 0.0); the tolerance here only absorbs float32 round-off of other BLAS builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.models import build_segmentor

GOLDEN = json.loads((Path(__file__).parent / "data" / "reference_logits.json").read_text())
NUM_CLASSES = 3
INPUT_SEED = 5
RELATIVE_TOLERANCE = 1e-4  # of the largest |logit|; float32 round-off is ~1e-6


def _fill(model: torch.nn.Module) -> None:
    """Deterministic, fan-in scaled weights and non-trivial BatchNorm statistics (same recipe as the golden file)."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * t[0].numel() ** -0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


@pytest.mark.parametrize("case", [k for k in GOLDEN if not k.startswith("_")])
def test_logits_equal_the_reference_implementation(case: str) -> None:
    arch, size = case.split("@")
    h, w = (int(v) for v in size.split("x"))
    ref = GOLDEN[case]
    model = build_segmentor(arch, NUM_CLASSES).eval()
    _fill(model)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        logits = model(x)  # (1, K, h, w)
        _, aux = model.forward_train(x)  # (1, K, h/16, w/16)
    atol = RELATIVE_TOLERANCE * ref["max_abs"]
    step = ref["step"]
    torch.testing.assert_close(logits[0, :, ::step, ::step], torch.tensor(ref["logits_sub"]), rtol=0, atol=atol)
    torch.testing.assert_close(logits[0].mean(dim=(1, 2)), torch.tensor(ref["channel_mean"]), rtol=0, atol=atol)
    assert logits.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=RELATIVE_TOLERANCE)
    assert aux is not None
    torch.testing.assert_close(aux[0], torch.tensor(ref["aux"]), rtol=0, atol=atol)
