"""RSP's ViTAEv2-S segmentation backbone (``ViTAE_Window_NoShift_basic`` with the seed's arguments), written anew.

Each stage is a reduction cell (RC: multi-dilation conv tokens "PRM" + attention, plus a parallel conv branch "PCM")
followed by normal cells (NC: attention + PCM + MLP). Facts of the reference that change numbers, all reproduced:
- ``relative_pos=False``: every window attention owns a relative-position bias table (kept so checkpoints load
  strictly) but the bias is never added; windows are never shifted;
- the token map is zero-padded to a multiple of 7 AFTER the LayerNorm and padded tokens take part in the softmax;
- the RC window path has no residual from its input tokens (``x = attn + PCM``); the RC global path (stages 2, 3) is
  T2T's ``Token_transformer`` whose attention output is ``v + proj(attn @ v)``;
- LayerNorm eps 1e-6 in the NCs, 1e-5 in the RCs; ``norm0..norm3`` exist but are unused;
- the drop-path slices follow the reference's (non-cumulative) ``startDpr`` bug.
Inputs must be square with a side that is a multiple of 32 (the reference reshapes outputs with ``sqrt(N)``);
anything else raises :class:`ViTAEInputError`. The engine always feeds square tiles. Registry entry:
:data:`RSP_VITAEV2_S`.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence

import torch
from torch import nn

from engine._torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from timm.layers import DropPath  # noqa: E402

from engine.models.spec import STAGE_OUTPUT_NORMS, ArchSpec  # noqa: E402
from engine.models.windows import Mlp, WindowAttention, windowed_attention  # noqa: E402

WINDOW = 7
INPUT_MULTIPLE = 32


class ViTAEInputError(ValueError):
    """The input is not square with a side that is a multiple of 32."""


class PRM(nn.Module):
    """Parallel dilated convs (+GELU), concatenated per token: (B, C, H, W) → (B, H/ds·W/ds, n_dil·embed)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    in_chans,
                    embed_dim,
                    kernel,
                    stride=stride,
                    padding=math.ceil(((kernel - 1) * d + 1 - stride) / 2),
                    dilation=d,
                ),
                nn.GELU(),
            )
            for d in dilations
        )
        self.out_chans = embed_dim * len(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → tokens (B, H/ds·W/ds, n_dil·embed)."""
        y = torch.stack([conv(x) for conv in self.convs], dim=-1)  # (B, E, h, w, n_dil)
        b, c, h, w, n = y.shape
        return y.permute(0, 4, 1, 2, 3).flatten(3).reshape(b, n * c, h * w).permute(0, 2, 1).contiguous()


def pcm(widths: Sequence[int], strides: Sequence[int], groups: int) -> nn.Sequential:
    """Conv-BN-SiLU-Conv-BN-SiLU-Conv through ``widths`` (c0→c1→c2→c3; convs with bias), keys ``PCM.0`` … ``PCM.6``."""
    c0, c1, c2, c3 = widths
    return nn.Sequential(
        nn.Conv2d(c0, c1, 3, strides[0], 1, groups=groups),
        nn.BatchNorm2d(c1),
        nn.SiLU(inplace=True),
        nn.Conv2d(c1, c2, 3, strides[1], 1, groups=groups),
        nn.BatchNorm2d(c2),
        nn.SiLU(inplace=True),
        nn.Conv2d(c2, c3, 3, strides[2], 1, groups=groups),
    )


class T2TAttention(nn.Module):
    """Global attention that changes width (dim → in_dim), with T2T's skip ``v + proj(attn @ v)``."""

    def __init__(self, dim: int, in_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        self.scale = (in_dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=False)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, dim) → (B, N, in_dim)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.in_dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.in_dim))
        return v.permute(0, 2, 1, 3).reshape(b, n, self.in_dim) + x


class RCAttention(nn.Module):
    """The RC's attention module: ``norm1``, ``attn``, ``norm2``, ``mlp`` (mlp_ratio 1), LayerNorm eps 1e-5."""

    def __init__(self, dim: int, token_dim: int, num_heads: int, windowed: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn: nn.Module = (
            WindowAttention(dim, token_dim, WINDOW, num_heads, use_bias_table=False)
            if windowed
            else T2TAttention(dim, token_dim, num_heads)
        )
        self.norm2 = nn.LayerNorm(token_dim)
        self.mlp = Mlp(token_dim, token_dim)


class ReductionCell(nn.Module):
    """RC: dilated-conv tokens (PRM) → attention (windowed or T2T), plus the conv branch (PCM); downsamples."""

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        token_dim: int,
        downsample: int,
        kernel: int,
        num_heads: int,
        dilations: Sequence[int],
        tokens_type: str,
        group: int,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.token_dim = token_dim
        self.windowed = tokens_type == "swin"
        strides, residual = [], downsample // 2
        for _ in range(3):
            strides.append((residual > 0) + 1)
            residual //= 2
        self.PCM = pcm((in_chans, embed_dim, embed_dim, token_dim), strides, group)
        self.PRM = PRM(in_chans, embed_dim, kernel, downsample, dilations)
        self.attn = RCAttention(self.PRM.out_chans, token_dim, num_heads, self.windowed)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, int, int]:
        """Image (B, C, h, w) or tokens (B, h·w, C) → (tokens (B, h'·w', token_dim), h', w'), h' = h / downsample."""
        if x.dim() < 4:  # tokens (B, N, C) → (B, C, H, W)
            b, _, c = x.shape
            x = x.view(b, h, w, c).permute(0, 3, 1, 2)
        shortcut = x
        tokens = self.PRM(x)  # (B, h·w, n_dil·E)
        h, w = h // self.downsample, w // self.downsample
        if self.windowed:
            y = windowed_attention(self.attn.norm1(tokens), h, w, typing.cast(WindowAttention, self.attn.attn), WINDOW)
        else:
            y = self.attn.attn(self.attn.norm1(tokens))
        conv = self.PCM(shortcut).permute(0, 2, 3, 1).reshape(y.shape)  # (B, h·w, token)
        y = y + conv
        return y + self.attn.mlp(self.attn.norm2(y)), h, w


class NormalCell(nn.Module):
    """NC: attention (windowed or global) + the conv branch (PCM) in parallel, then an MLP; keeps the shape."""

    def __init__(self, dim: int, num_heads: int, group: int, windowed: bool, drop_path: float) -> None:
        super().__init__()
        self.windowed = windowed
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn: nn.Module = (
            WindowAttention(dim, dim, WINDOW, num_heads, use_bias_table=False)
            if windowed
            else GlobalAttention(dim, num_heads)
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.PCM = pcm((dim, 4 * dim, dim, dim), (1, 1, 1), group)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Tokens (B, h·w, C) of an h×w map → the same shape."""
        b, n, c = x.shape
        shortcut = x
        if self.windowed:
            y = windowed_attention(self.norm1(x), h, w, typing.cast(WindowAttention, self.attn), WINDOW)
        else:
            y = self.attn(self.norm1(x))
        conv = self.drop_path(self.PCM(shortcut.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()))
        conv = conv.permute(0, 2, 3, 1).contiguous().view(b, n, c)
        x = shortcut + self.drop_path(y) + conv
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GlobalAttention(nn.Module):
    """Plain multi-head self-attention (``(q @ kᵀ)·scale``), keys ``qkv``, ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) → (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class ViTAEStage(nn.Module):
    """One reduction cell ``RC`` followed by the normal cells ``NC``."""

    def __init__(self, rc: ReductionCell, ncs: list[NormalCell]) -> None:
        super().__init__()
        self.RC = rc
        self.NC = nn.ModuleList(ncs)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, int, int]:
        """As :meth:`ReductionCell.forward`: (tokens (B, h'·w', C), h', w')."""
        x, h, w = self.RC(x, h, w)
        for nc in self.NC:
            x = nc(x, h, w)
        return x, h, w


class ViTAEv2(nn.Module):
    """RSP-ViTAEv2-S: token widths (64, 128, 256, 512) at strides (4, 8, 16, 32)."""

    embed_dims = (64, 64, 128, 256)
    token_dims = (64, 128, 256, 512)
    downsample = (4, 2, 2, 2)
    kernels = (7, 3, 3, 3)
    rc_heads = (1, 1, 2, 4)
    nc_heads = (1, 2, 4, 8)
    dilations = ((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2))
    tokens_type = ("swin", "swin", "transformer", "transformer")
    rc_groups = (1, 16, 32, 64)
    nc_groups = (1, 32, 64, 128)
    depths = (2, 2, 8, 2)

    def __init__(self, drop_path_rate: float = 0.3) -> None:
        super().__init__()
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(self.depths))]
        self.out_channels = self.token_dims
        stages = []
        in_chans = 3
        for i in range(4):
            start = 0 if i == 0 else self.depths[i - 1]  # the reference's non-cumulative slice, kept on purpose
            rates = dpr[start : start + self.depths[i]]
            rc = ReductionCell(
                in_chans,
                self.embed_dims[i],
                self.token_dims[i],
                self.downsample[i],
                self.kernels[i],
                self.rc_heads[i],
                self.dilations[i],
                self.tokens_type[i],
                self.rc_groups[i],
            )
            ncs = [
                NormalCell(
                    self.token_dims[i], self.nc_heads[i], self.nc_groups[i], self.tokens_type[i] == "swin", rates[j]
                )
                for j in range(self.depths[i])
            ]
            stages.append(ViTAEStage(rc, ncs))
            in_chans = self.token_dims[i]
        self.layers = nn.ModuleList(stages)
        for i, c in enumerate(self.token_dims):  # unused by the reference's forward; kept for strict loading
            self.add_module(f"norm{i}", nn.LayerNorm(c, eps=1e-6))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S), S a multiple of 32 → four maps (B, C_i, S/2^(i+2), S/2^(i+2)), C_i = :attr:`out_channels`."""
        h, w = x.shape[2], x.shape[3]
        if h != w or h % INPUT_MULTIPLE:
            raise ViTAEInputError(
                f"rsp_vitaev2_s needs square inputs with a side that is a multiple of {INPUT_MULTIPLE}, got {h}×{w}; "
                "pad the image (the engine's square tiles do this)"
            )
        outs = []
        for stage in self.layers:
            x, h, w = stage(x, h, w)  # (B, h·w, C)
            outs.append(x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2))  # (B, C, h, w)
        return outs


RSP_VITAEV2_S = ArchSpec(
    backbone=ViTAEv2,
    square_only=True,
    find_unused_parameters=True,  # norm0..norm3 and the never-added relative-position tables get no gradient
    backbone_unused=("head.*",),
    backbone_uninitialised=(*STAGE_OUTPUT_NORMS, "*relative_position_index"),
    backbone_dropped=("*relative_position_index", "*relative_coords_table", "*attn_mask"),  # as RSP's init_weights
    checkpoint_keys=("state_dict", "state_dict_ema", "model"),
    description="UperNet on RSP-ViTAEv2-S (ViTAE_Window_NoShift_basic); square inputs only",
    # python -m bench.precision on a network trained 40 iterations on the Potsdam sample (README, "Precision")
    bf16_agreement=0.99545,
)
