"""Plain MLP blocks (no Lightning)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear -> act for each hidden width, then an optional linear head to ``out_dim``."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)
