"""Optimiser construction (mmcv paramwise weight-decay rule) and the poly learning-rate schedule with warm-up.

LR (mmcv ``PolyLrUpdaterHook``, updated before every iteration ``it`` = 0, 1, ...)::

    regular = (base_lr - min_lr) * (1 - it / max_iters) ** power + min_lr
    lr      = regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))   if it < warmup_iters   (linear warm-up)
    lr      = regular                                                         otherwise

Weight decay (mmcv ``DefaultOptimizerConstructor`` with ``custom_keys`` all ``decay_mult=0``): a parameter whose full
name contains one of ``no_decay_keys`` as a substring gets weight decay 0; every other parameter, biases and
BatchNorms included, gets the configured decay. Frozen parameters (``requires_grad=False``) are left out.
"""

from __future__ import annotations

import typing

import torch

from training.config import TrainConfig


def poly_lr(it: int, base_lr: float, max_iters: int, power: float, min_lr: float) -> float:
    """Poly schedule value at iteration ``it`` (0-based), without warm-up."""
    return (base_lr - min_lr) * (1.0 - it / max_iters) ** power + min_lr


def lr_at(it: int, config: TrainConfig) -> float:
    """Learning rate used for the optimiser step of iteration ``it`` (0-based), warm-up included."""
    regular = poly_lr(it, config.lr, config.max_iters, config.lr_power, config.min_lr)
    if config.warmup_iters and it < config.warmup_iters:
        k = (1.0 - it / config.warmup_iters) * (1.0 - config.warmup_ratio)
        return regular * (1.0 - k)
    return regular


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_keys: typing.Sequence[str]) -> list[dict]:
    """Two parameter groups: names containing any of ``no_decay_keys`` (wd 0) and all others (``weight_decay``).

    Names are those of ``model.named_parameters()`` (e.g. ``backbone.layers.0.blocks.0.norm1.weight``), matching
    mmcv's ``'{module_prefix}.{param_name}'``; a DDP wrapper's ``module.`` prefix contains no key, so it is harmless.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if any(k in name for k in no_decay_keys) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def no_decay_names(model: torch.nn.Module, no_decay_keys: typing.Sequence[str]) -> list[str]:
    """Names of the parameters that get weight decay 0 (for logging and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and any(k in n for k in no_decay_keys)]


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, wd) or AdamW (betas, paramwise wd) as the config says, at the iteration-0 learning rate."""
    groups = param_groups(model, config.weight_decay, config.no_decay_keys)
    lr0 = lr_at(0, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr0, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr0, betas=config.betas, weight_decay=config.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every group, times the group's ``lr_mult`` where it has one (the seed uses none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
