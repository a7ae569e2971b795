"""Window attention pieces shared by the Swin-T and ViTAEv2-S backbones (RSP's Swin code lineage)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from engine.models.tables import cached_table


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, window, window, C); H and W must be multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into a ((2·window−1)², heads) relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))  # (2, w, w)
    flat = torch.flatten(coords, 1)  # (2, w²)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # (w², w², 2)
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


class Mlp(nn.Module):
    """fc1 → GELU → fc2 (dropout 0 at inference)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) → (..., out_features)."""
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with an optional relative-position bias.

    Args:
        in_dim: token width in.
        out_dim: token width out (``qkv`` maps in_dim → 3·out_dim; ViTAE's reduction cells change width here).
        window: window side in tokens.
        num_heads: attention heads; head width = out_dim / num_heads, scale = head_width^-0.5 applied to q.
        use_bias_table: add the relative-position bias. RSP's ViTAE keeps the table for loading but never adds it
            (``relative_pos=False``); Swin adds it.
    """

    relative_position_index: torch.Tensor  # a buffer: (window², window²) indices into the bias table

    def __init__(self, in_dim: int, out_dim: int, window: int, num_heads: int, use_bias_table: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (out_dim // num_heads) ** -0.5
        self.use_bias_table = use_bias_table
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(in_dim, out_dim * 3, bias=True)
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B·nW, N, in_dim), mask: (nW, N, N) of 0/−100 or None → (B·nW, N, out_dim)."""
        bw, n, _ = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B·nW, heads, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B·nW, heads, N, N)
        if self.use_bias_table:
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
            attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, -1)  # (B·nW, N, out_dim)
        return self.proj(x)


@functools.lru_cache(maxsize=64)
def window_token_order(h: int, w: int, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each token goes in RSP's pad-then-roll window order, as two index vectors (CPU, int64).

    ``gather`` (Hp·Wp,): for each position of the padded, rolled map in window order (window row, window column, row
    in the window, column in the window), the source token ``y·w + x`` of the h×w map, or ``h·w`` (a zero token
    appended) where it falls in the padding. ``scatter`` (h·w,): for each token of the h×w map, its position in that
    window order, i.e. where its result is after the attention (rolled back and cropped).
    """
    hp, wp = -(-h // window) * window, -(-w // window) * window
    ry, rx = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")  # positions on the rolled map
    py, px = (ry + shift) % hp, (rx + shift) % wp  # torch.roll(-shift): rolled[r] = padded[(r + shift) % n]
    source = torch.where((py < h) & (px < w), py * w + px, torch.full_like(py, h * w))
    order = (ry // window * (wp // window) + rx // window) * window * window + ry % window * window + rx % window
    gather = torch.empty(hp * wp, dtype=torch.int64)
    gather[order.reshape(-1)] = source.reshape(-1)
    real = gather < h * w
    scatter = torch.empty(h * w, dtype=torch.int64)
    scatter[gather[real]] = torch.arange(hp * wp)[real]  # the inverse of gather on the real tokens
    return gather, scatter


def windowed_attention(
    x: torch.Tensor,
    h: int,
    w: int,
    attn: WindowAttention,
    window: int,
    shift: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pad-then-roll window attention on tokens ``x`` (B, H·W, C) → (B, H·W, C_out), RSP's order.

    The (already normalised) token map is zero-padded right/bottom to a multiple of ``window`` first, then cyclically
    shifted by ``-shift`` (Swin's odd blocks), attended per window, shifted back and cropped. Padded tokens are not
    masked (as in RSP) unless ``mask`` says so. Padding, rolling and partitioning are one gather of the tokens, and
    the way back one more (:func:`window_token_order`): the same values as pad, roll, permute and back, with two
    copies of the token map instead of six.
    """
    b, n, c = x.shape
    gather, scatter = cached_table(window_token_order, h, w, window, shift)
    if gather.device != x.device:
        gather, scatter = gather.to(x.device), scatter.to(x.device)
    if gather.numel() > n:  # some padding: the index n is a zero token
        x = torch.cat([x, x.new_zeros(b, 1, c)], dim=1)
    windows = x.index_select(1, gather).view(-1, window * window, c)  # (B·nW, w², C)
    out = attn(windows, mask=mask)  # (B·nW, w², C_out)
    return out.view(b, -1, out.shape[-1]).index_select(1, scatter)  # (B, H·W, C_out)
