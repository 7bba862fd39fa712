"""Generator and projection discriminator for the conditional GAN (plain nn.Modules).

G: residual up-blocks (BigGAN-style, Brock et al. 2019) whose GroupNorm is modulated by w = [z, c] (c: the condition
vector from ``ConditionEmbedding``); GroupNorm rather than BatchNorm so a sample never depends on its batch and the
EMA copy needs no running statistics. A condition image is resized to every resolution and concatenated to the
features, so simulated structure reaches each scale.
D: residual down-blocks with spectral normalisation on every conv/linear (Miyato et al. 2018), the condition image
concatenated to the input, and a projection head (Miyato & Koyama 2018): out = linear(h) + <embed(c), h>.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from scarce.errors import ConfigError

MAX_MULT = 8  # widest level has MAX_MULT * width channels


def resolution_plan(image_size: int, key: str = "model.image_size") -> tuple[int, int]:
    """image_size = base * 2**k with base in 3..7 and k >= 1 -> (base, k); e.g. 8 -> (4, 1), 28 -> (7, 2), 64 -> (4, 4)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 6:
        raise ConfigError(f"{key}={image_size!r} is not allowed; expected an integer >= 6 of the form b * 2**k, "
                          "b in 3..7, k >= 1 (e.g. 8, 28, 32, 64, 128)")
    base, k = image_size, 0
    while base % 2 == 0 and base // 2 >= 3:
        base, k = base // 2, k + 1
    if k == 0 or base > 7:
        raise ConfigError(f"{key}={image_size} cannot be built by halving to a 3..7 pixel base; allowed sizes are "
                          "b * 2**k with b in 3..7, k >= 1 (e.g. 8, 12, 14, 16, 28, 32, 56, 64, 128, 256)")
    return base, k


def level_widths(width: int, k: int) -> list[int]:
    """Channels at levels 0..k (level i has resolution base * 2**i): wide at the base, ``width`` at full size."""
    return [width * min(2 ** (k - i), MAX_MULT) for i in range(k + 1)]


def _groups(ch: int) -> int:
    return math.gcd(ch, 32)


def _resize(cond: torch.Tensor, size: int) -> torch.Tensor:
    """(B, Cc, H, W) -> (B, Cc, size, size); area averaging is the anti-aliased downscale for integer ratios."""
    return cond if cond.shape[-1] == size else F.interpolate(cond, size=(size, size), mode="area")


class AdaGroupNorm(nn.Module):
    """GroupNorm whose gain and bias come from w: (B, ch, H, W), (B, w_dim) -> (B, ch, H, W)."""

    def __init__(self, ch: int, w_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch, affine=w_dim == 0)
        self.affine = nn.Linear(w_dim, 2 * ch) if w_dim else None
        if self.affine is not None:
            nn.init.zeros_(self.affine.weight)  # start as plain GroupNorm (gain 1, bias 0)
            nn.init.zeros_(self.affine.bias)

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        if self.affine is None:
            return h
        gain, bias = self.affine(w)[:, :, None, None].chunk(2, dim=1)  # (B, ch, 1, 1) each
        return h * (1 + gain) + bias


class GBlock(nn.Module):
    """Pre-activation residual block, x2 nearest upsampling: (B, cin, r, r) -> (B, cout, 2r, 2r)."""

    def __init__(self, cin: int, cout: int, w_dim: int, cond_channels: int):
        super().__init__()
        self.n1, self.n2 = AdaGroupNorm(cin, w_dim), AdaGroupNorm(cout, w_dim)
        self.c1 = nn.Conv2d(cin + cond_channels, cout, 3, padding=1)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, h: torch.Tensor, w: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        up = F.interpolate(h, scale_factor=2, mode="nearest")
        y = F.interpolate(F.relu(self.n1(h, w)), scale_factor=2, mode="nearest")
        if cond is not None:
            y = torch.cat([y, _resize(cond, y.shape[-1])], 1)  # (B, cin + Cc, 2r, 2r)
        y = self.c2(F.relu(self.n2(self.c1(y), w)))
        return y + self.skip(up)


class Generator(nn.Module):
    """z (B, z_dim), c (B, cond_dim) or None, cond (B, cond_channels, S, S) or None -> (B, channels, S, S) in [-1, 1]."""

    def __init__(self, z_dim: int, channels: int, image_size: int, width: int, cond_channels: int = 0,
                 cond_dim: int = 0):
        super().__init__()
        self.base, k = resolution_plan(image_size)
        self.z_dim, self.cond_dim, self.cond_channels, self.image_size = z_dim, cond_dim, cond_channels, image_size
        ch = level_widths(width, k)
        w_dim = z_dim + cond_dim  # every block is modulated by [z, c] (BigGAN's hierarchical latent, shared)
        self.stem = nn.Linear(w_dim, ch[0] * self.base**2)
        self.blocks = nn.ModuleList(GBlock(ch[i], ch[i + 1], w_dim, cond_channels) for i in range(k))
        self.out_norm = nn.GroupNorm(_groups(ch[k]), ch[k])
        self.out = nn.Conv2d(ch[k] + cond_channels, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        w = z if not self.cond_dim else torch.cat([z, _need(c, "c (condition vector)")], 1)  # (B, w_dim)
        if self.cond_channels:
            cond = _need(cond, "cond (condition image)")
        h = self.stem(w).view(len(z), -1, self.base, self.base)  # (B, ch0, base, base)
        for block in self.blocks:
            h = block(h, w, cond)  # resolution doubles
        h = F.relu(self.out_norm(h))  # (B, width, S, S)
        if self.cond_channels:
            h = torch.cat([h, _resize(cond, self.image_size)], 1)
        return torch.tanh(self.out(h))


class DBlock(nn.Module):
    """Residual block with spectral norm, optional x2 average-pool: (B, cin, r, r) -> (B, cout, r/2 or r, ...)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.c1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.c2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the first block sees raw pixels: no activation in front of its first conv (SNGAN's "optimized" block)
        y = self.c2(F.leaky_relu(self.c1(x if self.first else F.leaky_relu(x, 0.2)), 0.2))
        s = x if self.skip is None else self.skip(x)
        if self.down:
            y, s = F.avg_pool2d(y, 2), F.avg_pool2d(s, 2)
        return y + s


class Discriminator(nn.Module):
    """x (B, channels, S, S), c (B, cond_dim) or None, cond (B, cond_channels, S, S) or None -> logits (B,)."""

    def __init__(self, channels: int, image_size: int, width: int, cond_channels: int = 0, cond_dim: int = 0):
        super().__init__()
        _, k = resolution_plan(image_size)
        self.cond_dim, self.cond_channels = cond_dim, cond_channels
        ch = level_widths(width, k)[::-1]  # full resolution first
        blocks = [DBlock(channels + cond_channels, ch[0], down=True, first=True)]
        blocks += [DBlock(ch[i], ch[i + 1], down=i + 1 < k) for i in range(k)]  # k halvings in all, then one at base
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(nn.Linear(ch[-1], 1))
        self.embed = spectral_norm(nn.Linear(cond_dim, ch[-1], bias=False)) if cond_dim else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_channels:
            x = torch.cat([x, _need(cond, "cond (condition image)")], 1)  # (B, C + Cc, S, S)
        h = F.leaky_relu(self.blocks(x), 0.2).sum(dim=(2, 3))  # (B, ch) global sum pooling
        out = self.linear(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(_need(c, "c (condition vector)")) * h).sum(1)  # projection term <embed(c), h>
        return out


def spectral_norm_all(module: nn.Module) -> nn.Module:
    """Spectral-normalise every Linear / Conv / Embedding weight inside ``module`` (in place); returns it."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)) and not _has_sn(m):
            spectral_norm(m)
    return module


def _has_sn(m: nn.Module) -> bool:
    return hasattr(m, "parametrizations") and "weight" in m.parametrizations


def _need(t: torch.Tensor | None, what: str) -> torch.Tensor:
    if t is None:
        raise ValueError(f"this network is conditioned; pass {what}")
    return t
