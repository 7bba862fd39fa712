"""A DDPM-style U-Net (Ho et al. 2020; Nichol & Dhariwal 2021) for conditional diffusion, in plain PyTorch.

Residual blocks use GroupNorm + SiLU and take a per-sample scale/shift from the (time + condition) embedding;
self-attention runs at the feature-map sizes listed in ``attention_resolutions`` and always in the middle.
Condition images (e.g. a simulated scan) enter as extra input channels; labels/parameters as a vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.nets.conditioning import make_condition_embedding
from scarce.errors import ConfigError


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_image_size(size: int | Sequence[int], channel_mults: Sequence[int]) -> tuple[int, int]:
    """(H, W) if both halve cleanly at every level of the U-Net, else a ConfigError naming model.channel_mults."""
    h, w = _pair(size)
    k = 2 ** (len(channel_mults) - 1)
    if h % k or w % k or h < k or w < k:
        raise ConfigError(
            f"model.channel_mults={list(channel_mults)} has {len(channel_mults)} levels, so the image size must be "
            f"divisible by {k}; got image size {h}x{w} (use fewer levels or resize the images)"
        )
    return h, w


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, ch), ch)


def _zero(module: nn.Module) -> nn.Module:
    # residual branches start as the identity, which keeps deep U-Nets stable early in training
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps (int or float) -> (B, dim) sinusoidal features (Vaswani et al. 2017), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """x (B, Cin, H, W), emb (B, E) -> (B, Cout, H, W); the embedding sets GroupNorm's scale and shift."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2, self.drop = _norm(out_ch), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Cout, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, Cout, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions: (B, C, H, W) -> (B, C, H, W), residual."""

    def __init__(self, ch: int, head_dim: int = 32):
        super().__init__()
        self.heads = ch // head_dim if ch % head_dim == 0 else 1
        self.norm, self.qkv = _norm(ch), nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)  # (B, 3, nh, d, L)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, nh, L, d) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, L, d)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """A ResBlock, followed by self-attention when ``attention`` is set."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = Attention(out_ch) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, H/2, W/2) with a strided 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C, 2H, 2W): nearest neighbour then a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """x (B, in_channels, H, W), t (B,) -> (B, out_channels, H, W).

    image_size: H (= W) or (H, W), pixels; must be divisible by 2 ** (len(channel_mults) - 1)
    width: channels of the first level; level i has width * channel_mults[i]
    num_res_blocks: residual blocks per level on the way down (one more on the way up, for the extra skip)
    attention_resolutions: feature-map heights (pixels) that get self-attention, e.g. (7,) at 28x28 with 3 levels
    cond_channels: condition-image channels concatenated to the noisy input
    cond_dim: size of the condition vector (from :class:`ConditionEmbedding`) added to the time embedding; 0 = none
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int | Sequence[int],
        width: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        cond_channels: int = 0,
        cond_dim: int = 0,
    ):
        super().__init__()
        h, _ = check_image_size(image_size, channel_mults)
        self.channel_mults, self.cond_channels, self.cond_dim = tuple(channel_mults), cond_channels, cond_dim
        sizes = [h // 2**i for i in range(len(channel_mults))]  # feature-map height at each level
        unused = sorted(set(attention_resolutions) - set(sizes))
        if unused:
            raise ConfigError(
                f"model.attention_resolutions={list(attention_resolutions)}: sizes {unused} never occur; the "
                f"feature maps of a {h}-pixel image with model.channel_mults={list(channel_mults)} are {sizes}"
            )
        self.width, emb_dim = width, 4 * width
        self.time_embed = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_embed = nn.Linear(cond_dim, emb_dim) if cond_dim else None
        self.conv_in = nn.Conv2d(in_channels + cond_channels, width, 3, padding=1)

        # down path: every block's output is kept for a skip connection
        self.down, skips, ch = nn.ModuleList(), [width], width
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(Block(ch, width * mult, emb_dim, dropout, sizes[i] in attention_resolutions))
                ch = width * mult
                skips.append(ch)
            if i < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([Block(ch, ch, emb_dim, dropout, True), Block(ch, ch, emb_dim, dropout, False)])
        # up path: each block eats one skip, in reverse order
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                attn = sizes[i] in attention_resolutions
                self.up.append(Block(ch + skips.pop(), width * mult, emb_dim, dropout, attn))
                ch = width * mult
            if i > 0:
                self.up.append(Upsample(ch))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond_image: torch.Tensor | None = None,
                cond_vec: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) timesteps, cond_image (B, cond_channels, H, W), cond_vec (B, cond_dim)."""
        check_image_size(tuple(x.shape[-2:]), self.channel_mults)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.width))  # (B, E)
        if self.cond_embed is not None:
            if cond_vec is None:
                raise ValueError(f"this UNet takes a condition vector of size {self.cond_dim}; pass cond_vec")
            emb = emb + self.cond_embed(cond_vec)
        if self.cond_channels:
            if cond_image is None or cond_image.shape[1] != self.cond_channels:
                got = None if cond_image is None else tuple(cond_image.shape)
                raise ValueError(f"this UNet takes {self.cond_channels} condition-image channels; got {got}")
            x = torch.cat([x, cond_image.to(x.dtype)], dim=1)  # (B, C + Cc, H, W)
        h = self.conv_in(x)  # (B, width, H, W)
        hs = [h]
        for m in self.down:
            h = m(h, emb)
            hs.append(h)
        for m in self.mid:
            h = m(h, emb)
        for m in self.up:
            h = m(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(m, Block) else m(h, emb)
        return self.out(h)


class ConditionalUNet(nn.Module):
    """The denoising network with its condition embedding: what a diffusion model trains and averages (EMA).

    forward(x (B,C,H,W), t (B,), cond (B,Cc,H,W) | None, label (B,) or (B,K) | None, params (B,P) | None,
    drop (B,) bool | None) -> (B, C, H, W); ``drop`` swaps label/params for the learned null embedding (CFG).
    """

    def __init__(self, channels: int, image_size: int | Sequence[int], num_classes: int = 0, num_params: int = 0,
                 multi_label: bool = False, cond_channels: int = 0, **unet_kwargs):
        super().__init__()
        width = unet_kwargs.get("width", 64)
        self.embed = make_condition_embedding(4 * width, num_classes, num_params, multi_label)
        self.unet = UNet(channels, channels, image_size, cond_channels=cond_channels,
                         cond_dim=4 * width if self.embed is not None else 0, **unet_kwargs)

    @property
    def conditional(self) -> bool:
        """True when the net takes a label or a parameter vector (so classifier-free guidance applies)."""
        return self.embed is not None

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                label: torch.Tensor | None = None, params: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        vec = self.embed(label, params, drop) if self.embed is not None else None  # (B, 4 * width)
        return self.unet(x, t, cond_image=cond, cond_vec=vec)
