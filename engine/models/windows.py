"""Window attention pieces shared by the Swin-T and ViTAEv2-S backbones (RSP's Swin code lineage)."""

from __future__ import annotations

import torch
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, window, window, C); H and W must be multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B·nW, window, window, C) → (B, H, W, C), the inverse of :func:`window_partition`."""
    b = int(windows.shape[0] / (h * w / window / window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


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
    masked (as in RSP) unless ``mask`` says so.
    """
    b, _, c = x.shape
    x = x.view(b, h, w, c)
    pad_r = (window - w % window) % window
    pad_b = (window - h % window) % window
    x = nn.functional.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C)
    hp, wp = x.shape[1], x.shape[2]
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = window_partition(x, window).view(-1, window * window, c)  # (B·nW, w², C)
    out = attn(windows, mask=mask)  # (B·nW, w², C_out)
    out = window_reverse(out.view(-1, window, window, out.shape[-1]), window, hp, wp)  # (B, Hp, Wp, C_out)
    if shift > 0:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    if pad_r > 0 or pad_b > 0:
        out = out[:, :h, :w, :].contiguous()
    return out.view(b, h * w, -1)
