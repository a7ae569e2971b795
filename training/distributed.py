"""Process-group set-up for ``torchrun`` and a synchronised BatchNorm that also works on CPU (gloo).

``torch.nn.SyncBatchNorm`` refuses CPU modules, so on CPU we replace BatchNorm layers with
:class:`GlooSyncBatchNorm2d`, which all-reduces the per-channel sums with a differentiable all-reduce: batch
statistics (and their gradients) are those of the global batch, as with SyncBN on GPUs. On CUDA the stock
``SyncBatchNorm`` is used. Either way a 2-process step equals a single-process step on the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process. ``world_size == 1`` and ``enabled=False`` outside torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, saves and validates."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, local_rank=local, world_size=world, enabled=True)


class GlooSyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed over all ranks (any backend, CPU included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised in training with the batch statistics of all ranks; as BatchNorm2d otherwise."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable

        c = x.shape[1]
        # Two passes, as native BatchNorm: the global mean first, then the mean of squared deviations from it. The
        # one-pass E[x²] − E[x]² form loses precision where the variance is small compared with the mean.
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))  # (C + 1,) differentiable sum over ranks
        n = sums[-1]
        mean = sums[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n  # biased, as BN normalises with
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a synchronised one (``SyncBatchNorm`` on CUDA, gloo-capable on CPU)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm2d):
        new = GlooSyncBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child, device_type)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def barrier(info: DistInfo) -> None:
    """Wait for every rank (nothing to do outside DDP)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op single-process)."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


__all__ = ["DistInfo", "GlooSyncBatchNorm2d", "all_reduce_sum", "barrier", "convert_sync_batchnorm", "init_distributed"]
