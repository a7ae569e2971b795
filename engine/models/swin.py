"""RSP's Swin-T segmentation backbone (the Swin-Transformer-Semantic-Segmentation variant), written anew.

Differences from timm's Swin that change numbers or keys, all reproduced here:
- each block zero-pads the token map to a multiple of the window FIRST and then rolls it (timm rolls, then pads);
  the shift mask is recomputed every forward on the padded size;
- ``PatchMerging`` sits at the END of stages 0–2 (``layers.{i}.downsample``), and the stage output is taken before it;
- every output has its own LayerNorm ``norm{i}``; there is no final ``norm``.
Outputs: channels (96, 192, 384, 768) at strides (4, 8, 16, 32), any input size. Registry entry: :data:`RSP_SWIN_T`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine._torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from timm.layers import DropPath  # noqa: E402

from engine.models.spec import STAGE_OUTPUT_NORMS, ArchSpec  # noqa: E402
from engine.models.windows import Mlp, WindowAttention, window_partition, windowed_attention  # noqa: E402

MASK_VALUE = -100.0


class SwinBlock(nn.Module):
    """LayerNorm → (shifted) window attention → residual, LayerNorm → MLP → residual; pads before it rolls."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, dim, window, num_heads, use_bias_table=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        """Tokens (B, h·w, C) of an h×w map → the same shape; ``mask`` is used by shifted blocks only."""
        # x: (B, H·W, C)
        y = windowed_attention(
            self.norm1(x), h, w, self.attn, self.window, self.shift, mask if self.shift > 0 else None
        )
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (odd sizes zero-padded) → LayerNorm(4C) → Linear(4C, 2C, no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Tokens (B, h·w, C) of an h×w map → (B, ⌈h/2⌉·⌈w/2⌉, 2C)."""
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))  # (B, H/2·W/2, 2C)


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, window², window²) attention mask of the shifted windows on the padded (Hp, Wp) map."""
    hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
    img = torch.zeros((1, hp, wp, 1), device=device)
    regions = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    cnt = 0
    for hs in regions:
        for ws in regions:
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, window).view(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, MASK_VALUE).masked_fill(mask == 0, 0.0)


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows, then (stages 0–2) patch merging."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, dpr: list[float], downsample: bool
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, dpr[i]) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Returns (stage output before merging, next stage input, next H, next W)."""
        mask = shift_mask(h, w, self.window, self.shift, x.device)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Zero-pad to a multiple of 4, Conv2d(3, C, 4, stride 4), LayerNorm."""

    def __init__(self, embed_dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, embed_dim, patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, ⌈H/4⌉, ⌈W/4⌉)."""
        _, _, h, w = x.shape
        if w % self.patch:
            x = F.pad(x, (0, self.patch - w % self.patch))
        if h % self.patch:
            x = F.pad(x, (0, 0, 0, self.patch - h % self.patch))
        x = self.proj(x)  # (B, C, H/4, W/4)
        b, c, hh, ww = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).view(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """RSP-Swin-T: embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, drop_path 0.3.

    ``forward(x)`` on (B, 3, H, W) returns four maps (B, C_i, ⌈H/2^(i+2)⌉, ⌈W/2^(i+2)⌉).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.out_channels = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.out_channels[i],
                    depth,
                    num_heads[i],
                    window,
                    mlp_ratio,
                    dpr[start : start + depth],
                    downsample=i < len(depths) - 1,
                )
            )
        for i, c in enumerate(self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) → four maps (B, C_i, ⌈H/2^(i+2)⌉, ⌈W/2^(i+2)⌉), C_i = :attr:`out_channels`."""
        x = self.patch_embed(x)  # (B, C, H/4, W/4)
        h, w = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)  # (B, H/4·W/4, C)
        outs = []
        for i, stage in enumerate(self.layers):
            out, x, nh, nw = stage(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(-1, h, w, self.out_channels[i]).permute(0, 3, 1, 2).contiguous())  # (B, C_i, h, w)
            h, w = nh, nw
        return outs


RSP_SWIN_T = ArchSpec(
    backbone=SwinTransformer,
    # the classifier and final norm of RSP's classification network; attn_mask buffers are recomputed here
    backbone_unused=("head.*", "norm.*", "*attn_mask"),
    backbone_uninitialised=(*STAGE_OUTPUT_NORMS, "*relative_position_index"),
    description="UperNet on RSP-Swin-T (RSP's pad-then-roll Swin variant)",
    # python -m bench.precision on a network trained 80 iterations on the Potsdam sample (README, "Precision")
    bf16_agreement=0.99892,
)
