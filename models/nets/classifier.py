"""A small CNN for small images (8x8 to 64x64): the TSTR classifier and the default FID/KID feature extractor."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a sample's features must not depend on what else is in its batch (FID inputs)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class SmallCNN(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, num_classes) logits; ``features`` gives the (B, feature_dim) penultimate.

    Three conv blocks (the first two halve the resolution), then adaptive average pooling to a 4x4 grid so any input
    size works and coarse position survives (global pooling would forget left vs right), then a linear layer to
    ``feature_dim`` and the class head.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        if width % 8:
            raise ValueError(f"width={width} must be a multiple of 8 (GroupNorm uses 8 groups)")
        self.in_channels, self.num_classes, self.width, self.feature_dim = in_channels, num_classes, width, feature_dim
        self.body = nn.Sequential(
            _block(in_channels, width, 2),       # (B, w, H/2, W/2): a strided stem, 3x faster on CPU than stride 1
            _block(width, 2 * width, 2),         # (B, 2w, H/4, W/4)
            _block(2 * width, 2 * width, 1),     # (B, 2w, H/4, W/4)
            nn.AdaptiveAvgPool2d(4),             # (B, 2w, 4, 4)
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
        )
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, feature_dim), the pre-activation penultimate layer (closer to Gaussian than post-ReLU)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
