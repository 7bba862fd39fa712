"""DiffAugment: differentiable augmentation of everything D sees (Zhao et al., "Differentiable Augmentation for
Data-Efficient GAN Training", NeurIPS 2020).

D is shown augmented reals and augmented fakes (same ops, independent draws) and G's gradient flows back through the
augmentation, so D cannot memorise a small training set and G is not taught to reproduce the augmentations.
Input (B, C, H, W) in [-1, 1]. When a condition image is concatenated to the image, pass the concatenation and the
number of image channels: spatial ops move image and condition together, colour ops touch only the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from scarce.errors import ConfigError

TRANSLATION_RATIO = 0.125  # shift up to 1/8 of the side, as in the paper
CUTOUT_RATIO = 0.5  # cut a square of half the side


def _rand(shape: tuple[int, ...], x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` from ``gen`` (on the generator's device), moved to x's device."""
    device = gen.device if gen is not None else x.device
    return torch.rand(shape, generator=gen, device=device).to(x.device)


def _randint(high: torch.Tensor | int, shape: tuple[int, ...], x: torch.Tensor,
             gen: torch.Generator | None) -> torch.Tensor:
    device = gen.device if gen is not None else x.device
    return torch.randint(0, int(high), shape, generator=gen, device=device).to(x.device)


def brightness(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Add U(-0.5, 0.5) per sample."""
    return x + (_rand((len(x), 1, 1, 1), x, gen) - 0.5).to(x.dtype)


def saturation(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Scale the distance from the per-pixel channel mean by U(0, 2) per sample; a no-op on one channel."""
    if x.shape[1] == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand((len(x), 1, 1, 1), x, gen) * 2).to(x.dtype) + mean


def contrast(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Scale the distance from the per-sample mean by U(0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((len(x), 1, 1, 1), x, gen) + 0.5).to(x.dtype) + mean


def translation(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Shift each sample by an integer offset in [-S/8, S/8] per axis, filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = _randint(2 * sh + 1, (b, 1), x, gen) - sh  # (B, 1)
    tx = _randint(2 * sw + 1, (b, 1), x, gen) - sw
    # index into a copy padded by one zero pixel; offsets beyond the border clamp onto that zero ring
    iy = (torch.arange(h, device=x.device)[None] + ty + 1).clamp(0, h + 1)  # (B, H)
    ix = (torch.arange(w, device=x.device)[None] + tx + 1).clamp(0, w + 1)  # (B, W)
    xp = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return xp[bi, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Zero a (S/2 x S/2) square at a random centre per sample (the square may overhang the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = _randint(h + (1 - ch % 2), (b, 1), x, gen)  # centres as in the paper's reference formulation
    cx = _randint(w + (1 - cw % 2), (b, 1), x, gen)
    ys = torch.arange(h, device=x.device)[None] - cy + ch // 2  # (B, H): inside when 0 <= ys < ch
    xs = torch.arange(w, device=x.device)[None] - cx + cw // 2
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


COLOUR_OPS: dict[str, Callable] = {"brightness": brightness, "saturation": saturation, "contrast": contrast}
SPATIAL_OPS: dict[str, Callable] = {"translation": translation, "cutout": cutout}
GROUPS = {"color": ("brightness", "saturation", "contrast"), "colour": ("brightness", "saturation", "contrast")}
OPS = tuple(COLOUR_OPS) + tuple(SPATIAL_OPS)


def parse_policy(policy: str | Sequence[str] | None, key: str = "model.diffaug") -> tuple[str, ...]:
    """"color,translation,cutout" -> the op names in order; "" / None -> () (augmentation off)."""
    if policy is None:
        return ()
    items = policy.split(",") if isinstance(policy, str) else list(policy)
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if item in GROUPS:
            out.extend(GROUPS[item])
        elif item in OPS:
            out.append(item)
        else:
            allowed = ", ".join(repr(o) for o in (*GROUPS, *OPS))
            raise ConfigError(f"{key}={policy!r}: unknown op {item!r}; allowed ops (comma-separated): {allowed}")
    return tuple(out)


class DiffAugment:
    """Callable: x (B, C, H, W) in [-1, 1] -> augmented x, same shape; differentiable in x."""

    def __init__(self, policy: str | Sequence[str] | None, key: str = "model.diffaug"):
        self.ops = parse_policy(policy, key)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, image_channels: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``image_channels``: how many leading channels are image (the rest are condition channels); None = all."""
        c = x.shape[1] if image_channels is None else image_channels
        for op in self.ops:
            if op in COLOUR_OPS:
                img = COLOUR_OPS[op](x[:, :c], generator)
                x = img if c == x.shape[1] else torch.cat([img, x[:, c:]], 1)
            else:
                x = SPATIAL_OPS[op](x, generator)
        return x.contiguous()
