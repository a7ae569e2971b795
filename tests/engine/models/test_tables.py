"""The networks' cached tables under ``torch.compile`` (``engine.models.tables``): no Dynamo warning, same values.

Dynamo warns once per call site of an ``lru_cache``-wrapped function; a ``--compile`` run printed two such warnings
for the fast head's resize matrices. Compiled here with ``backend="eager"`` (Dynamo's tracing only: what warns; no
C++ compilation, so the test takes seconds), the compiled module must run the same ops as the eager one.
"""

from __future__ import annotations

import functools
import warnings

import torch

from engine.models import build_segmentor
from engine.models.windows import WindowAttention, windowed_attention

LRU_WARNING = "lru_cache"


def _compiled_warnings(fn, *args) -> tuple[torch.Tensor, list[str]]:
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(fn, backend="eager", dynamic=False)(*args)
    return out, [str(w.message) for w in caught if LRU_WARNING in str(w.message)]


def test_dynamo_still_warns_about_a_direct_lru_cache_call() -> None:
    """The control: without :func:`cached_table`, this torch warns (else the tests below could not fail)."""

    @functools.lru_cache(maxsize=4)
    def ramp(n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float32)

    out, found = _compiled_warnings(lambda x: x + ramp(x.shape[0]), torch.zeros(5))
    assert torch.equal(out, torch.arange(5, dtype=torch.float32))
    assert found, "this torch no longer warns about lru_cache calls under Dynamo"


def test_fast_head_compiles_without_the_warning_and_computes_the_same() -> None:
    torch.manual_seed(0)
    model = build_segmentor("lite_resnet", 4, aux_head=False).eval().set_lowres_fusion(True)
    x = torch.randn(1, 3, 96, 160)
    with torch.inference_mode():
        eager = model(x)
        compiled, found = _compiled_warnings(model, x)
    assert found == []
    assert torch.equal(compiled, eager)


def test_window_attention_compiles_without_the_warning_and_computes_the_same() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(16, 16, 7, 2, use_bias_table=True).eval()
    x = torch.randn(2, 10 * 12, 16)  # a 10×12 token map: padded to 14×14, shifted
    with torch.inference_mode():
        eager = windowed_attention(x, 10, 12, attn, 7, 3)
        compiled, found = _compiled_warnings(lambda t: windowed_attention(t, 10, 12, attn, 7, 3), x)
    assert found == []
    assert torch.equal(compiled, eager)
