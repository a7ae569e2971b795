"""RSP's pad-then-roll window attention as one gather of the tokens and one back (``engine.models.windows``).

The gather form must give the same floats as the textbook form (zero-pad right/bottom, ``torch.roll`` by
``-shift``, partition into windows, attend, reverse, roll back, crop), written out again here with plain tensor
ops, for map sizes that are and are not multiples of the window, with and without the shift mask.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models.swin import shift_mask
from engine.models.windows import WindowAttention, window_token_order, windowed_attention

WINDOW = 7


def pad_roll_partition(x: torch.Tensor, h: int, w: int, shift: int, attn: WindowAttention, mask) -> torch.Tensor:
    b, _, c = x.shape
    grid = F.pad(x.view(b, h, w, c), (0, 0, 0, -w % WINDOW, 0, -h % WINDOW))
    hp, wp = grid.shape[1:3]
    grid = torch.roll(grid, (-shift, -shift), (1, 2))
    wins = grid.view(b, hp // WINDOW, WINDOW, wp // WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
    out = attn(wins.reshape(-1, WINDOW * WINDOW, c), mask=mask)
    out = out.view(b, hp // WINDOW, wp // WINDOW, WINDOW, WINDOW, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return torch.roll(out, (shift, shift), (1, 2))[:, :h, :w].reshape(b, h * w, -1)


@pytest.mark.parametrize("h, w", [(14, 21), (16, 16), (9, 30), (7, 7), (3, 5)])
@pytest.mark.parametrize("shift", [0, 3])
def test_gather_form_gives_the_same_floats_as_pad_roll_partition(h: int, w: int, shift: int) -> None:
    torch.manual_seed(h * 100 + w + shift)
    attn = WindowAttention(24, 24, WINDOW, 3, use_bias_table=True).eval()
    x = torch.randn(2, h * w, 24)
    mask = shift_mask(h, w, WINDOW, shift, x.device) if shift else None
    with torch.no_grad():
        ours = windowed_attention(x, h, w, attn, WINDOW, shift, mask)
        theirs = pad_roll_partition(x, h, w, shift, attn, mask)
    assert ours.shape == (2, h * w, 24)
    assert torch.equal(ours, theirs)


def test_padding_positions_read_the_appended_zero_token_and_every_token_comes_back_once() -> None:
    h, w = 9, 10
    gather, scatter = window_token_order(h, w, WINDOW, 3)
    assert gather.numel() == 14 * 14 and int((gather == h * w).sum()) == 14 * 14 - h * w  # the padding
    assert sorted(gather[gather < h * w].tolist()) == list(range(h * w))  # each real token once
    assert torch.equal(gather[scatter], torch.arange(h * w))  # back where it came from
