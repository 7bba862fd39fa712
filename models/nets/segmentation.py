"""A small 2D U-Net for per-pixel classification (Ronneberger et al. 2015): plain nn.Module, no Lightning."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + GroupNorm + SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU())


class SegmentationUNet(nn.Module):
    """(B, C, H, W) -> (B, K, H, W) logits; H and W must divide by 2**(levels - 1)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, levels: int = 3):
        super().__init__()
        chans = [width * 2 ** i for i in range(levels)]
        self.down = nn.ModuleList([_block(in_channels if i == 0 else chans[i - 1], c) for i, c in enumerate(chans)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * chans[i - 1], chans[i - 1]) for i in range(levels - 1, 0, -1)])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)
