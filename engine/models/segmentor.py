"""UperNet segmentor: a backbone returning four feature maps, ``decode_head`` (UPerHead) and ``auxiliary_head``."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.heads import FCNHead, UPerHead, resize


class UperNet(nn.Module):
    """Backbone + UPerHead (+ FCNHead auxiliary head for training), mmseg's ``EncoderDecoder.encode_decode``.

    ``forward(x)`` on (N, 3, H, W) returns logits (N, K, H, W): the decode head's stride-4 logits resized
    bilinearly (``align_corners=False``) to the input size. The auxiliary head is never applied in ``forward``;
    training calls :meth:`forward_train`.

    Attributes:
        arch: the preset name this network was built from.
        num_classes: K.
        square_only: True when the backbone accepts only square inputs (ViTAEv2).
    """

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        in_channels: tuple[int, ...],
        num_classes: int,
        channels: int,
        aux_channels: int | None,
        aux_in_index: int = 2,
        square_only: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.square_only = square_only
        self.backbone = backbone
        self.decode_head = UPerHead(in_channels, num_classes, channels=channels)
        self.auxiliary_head = (
            FCNHead(in_channels[aux_in_index], num_classes, aux_channels, in_index=aux_in_index)
            if aux_channels is not None
            else None
        )

    def set_lowres_fusion(self, enabled: bool) -> UperNet:
        """Eval-time fast path of the decode head (:meth:`UPerHead._fuse_lowres`): the same function, the network
        ≈ 1.2-1.6× faster on CPU for the 512-wide RSP heads, floats rounded in another order. Off after construction,
        so the module reproduces the reference code's floats exactly; the engine turns it on unless asked for
        ``--exact``. Returns ``self``."""
        self.decode_head.lowres_fusion = enabled
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) of images (N, 3, H, W)."""
        features = self.backbone(x)  # 4 × (N, C_i, H/2^(i+2), W/2^(i+2))
        logits = self.decode_head(features)  # (N, K, H/4, W/4)
        return resize(logits, x.shape[2:])  # (N, K, H, W)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode logits (N, K, H/4, W/4) and auxiliary logits (N, K, H/16, W/16) (None without an aux head)."""
        features = self.backbone(x)
        aux = self.auxiliary_head(features) if self.auxiliary_head is not None else None
        return self.decode_head(features), aux
