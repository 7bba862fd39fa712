"""TVAE networks (Xu et al., NeurIPS 2019): MLP encoder to a diagonal Gaussian, MLP decoder with a learned
per-dimension output scale for the ``tanh`` spans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.nets.mlp import mlp


@dataclass
class TVAEConfig:
    data_dim: int  # width of a transformed row (the transformer's layout)
    latent_dim: int = 128  # size of z
    compress_dims: Sequence[int] = (128, 128)  # encoder hidden widths
    decompress_dims: Sequence[int] = (128, 128)  # decoder hidden widths


class Encoder(nn.Module):
    def __init__(self, cfg: TVAEConfig):
        super().__init__()
        self.body = mlp(cfg.data_dim, cfg.compress_dims)
        last = cfg.compress_dims[-1] if cfg.compress_dims else cfg.data_dim
        self.mu = nn.Linear(last, cfg.latent_dim)
        self.logvar = nn.Linear(last, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, H)
        return self.mu(h), self.logvar(h)  # (B, Z), (B, Z)


class Decoder(nn.Module):
    def __init__(self, cfg: TVAEConfig):
        super().__init__()
        self.net = mlp(cfg.latent_dim, cfg.decompress_dims, cfg.data_dim)
        # Output scale of every dimension; only the tanh dims use it. 0.1 as in the reference; kept in [0.01, 1].
        self.sigma = nn.Parameter(torch.full((cfg.data_dim,), 0.1))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(z), self.sigma  # (B, D) pre-activations, (D,)


class TVAE(nn.Module):
    def __init__(self, cfg: TVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        recon, sigma = self.decoder(z)
        return recon, sigma, mu, logvar
