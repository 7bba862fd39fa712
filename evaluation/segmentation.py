"""Segmentation metrics: Dice per class from confusion counts (so batches and DDP ranks add up exactly)."""

from __future__ import annotations

import torch


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows = target class, columns = predicted class; pred/target (B, H, W) int64."""
    idx = target.flatten().long() * num_classes + pred.flatten().long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def dice_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    """(K,) Dice 2 TP / (2 TP + FP + FN) per class; NaN for a class absent from both prediction and target."""
    cm = cm.double()
    tp = cm.diag()
    denom = cm.sum(0) + cm.sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))
