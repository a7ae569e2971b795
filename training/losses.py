"""The seed's loss: cross-entropy on upsampled logits, averaged over ALL pixels, decode + 0.4 × auxiliary.

mmseg 0.21 computes ``F.cross_entropy(logits, label, ignore_index=i, reduction="none")`` and then ``.mean()`` over
every pixel of the batch, so ignored pixels count as zeros in the average (there is no ``avg_non_ignore`` in 0.21):
a batch with many clutter pixels has a smaller loss and smaller gradients. Logits are bilinearly resized
(``align_corners=False``) from 1/4 (decode) or 1/16 (aux) resolution to the label size first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seg_cross_entropy(
    logits: torch.Tensor, label: torch.Tensor, ignore_index: int, labelled_mean: bool = False
) -> torch.Tensor:
    """Mean over all pixels (ignored ones as 0) of the per-pixel cross-entropy; over labelled pixels only when
    ``labelled_mean`` (so a crop with few labelled pixels weighs as much per pixel as a fully labelled one).

    Args:
        logits: (B, K, h, w) raw scores at any resolution.
        label: (B, H, W) int64 class ids.
        ignore_index: label value whose pixels contribute 0 (and still count in the mean, as mmseg 0.21's, unless
            ``labelled_mean``).
        labelled_mean: divide by the labelled pixels instead of all pixels.

    Returns:
        Scalar loss (float32 even under autocast).
    """
    up = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)
    per_pixel = F.cross_entropy(up, label, ignore_index=ignore_index, reduction="none")  # (B, H, W)
    if labelled_mean:
        return per_pixel.sum() / (label != ignore_index).sum().clamp(min=1)
    return per_pixel.mean()


def seed_loss(
    decode_logits: torch.Tensor,
    aux_logits: torch.Tensor | None,
    label: torch.Tensor,
    ignore_index: int,
    aux_weight: float,
    labelled_mean: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss = decode CE + ``aux_weight`` × aux CE, and its parts as floats for logging."""
    decode = seg_cross_entropy(decode_logits, label, ignore_index, labelled_mean)
    parts = {"loss_decode": float(decode.detach())}
    total = decode
    if aux_logits is not None:
        aux = seg_cross_entropy(aux_logits, label, ignore_index, labelled_mean)
        parts["loss_aux"] = float(aux.detach())
        total = total + aux_weight * aux
    parts["loss"] = float(total.detach())
    return total, parts
