"""Sample grids: one row per class, so a glance says whether the conditioning took."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.image_set import to_uint8
from scarce.loggers import log_image


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows*H', nrow*W', C) uint8 image, ``nrow`` images per row."""
    x = to_uint8(images)  # (N, H, W, C)
    n, h, w, c = x.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = x[i]
    return grid


def grid_labels(num_classes: int, per_class: int, max_classes: int = 10) -> torch.Tensor:
    """Class indices for a grid: ``per_class`` of each of the first ``max_classes`` classes, row by row."""
    k = max(1, min(num_classes, max_classes))
    return torch.arange(k).repeat_interleave(per_class)


def log_sample_grid(module, images: torch.Tensor, per_row: int, key: str = "samples/grid") -> Path | None:
    """Log a grid from inside a LightningModule: PNG under <log_dir or run folder>/samples, image to W&B."""
    trainer = module.trainer
    if not trainer.is_global_zero or trainer.sanity_checking:
        return None
    root = trainer.log_dir or trainer.default_root_dir
    return log_image(trainer.loggers, key, image_grid(images, per_row), Path(root) / "samples",
                     step=trainer.global_step, caption=f"epoch {trainer.current_epoch}, one row per class")
