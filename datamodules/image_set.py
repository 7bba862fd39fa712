"""The in-memory form every image reader returns and every image generator writes, and the batch keys.

Pixels on disk are integers (8- or 16-bit) or floats; models see float tensors in [-1, 1], shape (B, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# keys of an image batch (a dict); "label" is (B,) int64 class index or (B, K) float multi-hot
IMAGE, LABEL, COND, PARAMS = "image", "label", "cond", "params"
NULL_LABEL = -1  # a single-label batch entry with no class (classifier-free guidance's unconditional branch)


@dataclass
class ImageSet:
    """Images with labels, as read from disk or sampled from a generator.

    images: (N, H, W, C) uint8 / uint16 / float32 pixel values as stored (C = 1 grayscale, 3 RGB)
    labels: (N,) int64 class index, or (N, K) {0, 1} multi-label
    classes: a name per class index (or per label column for multi-label sets)
    split: (N,) "train" / "val" / "test" where the source defines its own split, else None
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    split: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def subset(self, idx: np.ndarray) -> ImageSet:
        split = None if self.split is None else self.split[idx]
        return ImageSet(self.images[idx], self.labels[idx], list(self.classes), split, self.source, dict(self.meta))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> (B, H, W, C) uint8, the form synthetic images are written in."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
