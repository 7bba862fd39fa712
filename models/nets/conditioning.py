"""Embedding the non-image conditions (class label, continuous parameter vector) into one vector per sample."""

from __future__ import annotations

import torch
from torch import nn


class ConditionEmbedding(nn.Module):
    """label (B,) int64 or (B, K) multi-hot, params (B, P) -> (B, dim); ``drop`` (B,) bool swaps in a learned null.

    Entries with label == -1 (single-label) also take the null embedding. With no label and no params configured
    the module is absent: callers hold ``None`` instead (see :func:`make_condition_embedding`).
    """

    def __init__(self, dim: int, num_classes: int = 0, num_params: int = 0, multi_label: bool = False):
        super().__init__()
        self.num_classes, self.num_params, self.multi_label = num_classes, num_params, multi_label
        if num_classes:
            self.label = nn.Linear(num_classes, dim, bias=False) if multi_label else nn.Embedding(num_classes, dim)
        if num_params:
            self.params = nn.Sequential(nn.Linear(num_params, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, label: torch.Tensor | None = None, params: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.num_classes:
            if label is None:
                raise ValueError(f"this model is conditioned on {self.num_classes} classes; pass label")
            if self.multi_label:
                parts.append(self.label(label.float()))
                missing = torch.zeros(len(label), dtype=torch.bool, device=label.device)
            else:
                missing = label < 0
                parts.append(self.label(label.clamp_min(0)))
            drop = missing if drop is None else (drop | missing)
        if self.num_params:
            if params is None:
                raise ValueError(f"this model is conditioned on a {self.num_params}-vector of parameters; pass params")
            parts.append(self.params(params.float()))
        e = torch.stack(parts).sum(0)
        if drop is not None:
            e = torch.where(drop[:, None], self.null.to(e.dtype).expand_as(e), e)
        return e


def make_condition_embedding(dim: int, num_classes: int = 0, num_params: int = 0,
                             multi_label: bool = False) -> ConditionEmbedding | None:
    return ConditionEmbedding(dim, num_classes, num_params, multi_label) if (num_classes or num_params) else None
