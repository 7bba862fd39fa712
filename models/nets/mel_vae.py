"""Conditional VAE nets on log-mel spectrograms (B, 1, n_mels, frames): encoder and decoder, no Lightning."""

from __future__ import annotations

import torch
from torch import nn

DOWN = 8  # three stride-2 convolutions: mel bins and frames are padded to multiples of this


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


def _deconv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


def padded(n: int) -> int:
    return -(-n // DOWN) * DOWN


class Condition(nn.Module):
    """(label (B,), speaker (B,) with -1 = any) -> (B, 2 * embed_dim): a label and a speaker embedding; the last
    speaker row is the shared "any speaker" code, so unseen speakers still condition."""

    def __init__(self, num_classes: int, num_speakers: int, embed_dim: int):
        super().__init__()
        self.label = nn.Embedding(num_classes, embed_dim)
        self.speaker = nn.Embedding(num_speakers + 1, embed_dim)
        self.num_speakers = num_speakers
        self.dim = 2 * embed_dim

    def forward(self, label: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        spk = torch.where((speaker < 0) | (speaker >= self.num_speakers), self.num_speakers, speaker)
        return torch.cat([self.label(label), self.speaker(spk)], 1)


class MelEncoder(nn.Module):
    """(B, 1, M, F) + condition (B, C) -> (mu, logvar), each (B, latent_dim)."""

    def __init__(self, n_mels: int, frames: int, latent_dim: int, width: int, cond_dim: int):
        super().__init__()
        self.body = nn.Sequential(_conv(1, width), _conv(width, 2 * width), _conv(2 * width, 2 * width), nn.Flatten())
        flat = 2 * width * (padded(n_mels) // DOWN) * (padded(frames) // DOWN)
        self.head = nn.Linear(flat + cond_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(torch.cat([self.body(x), c], 1)).chunk(2, 1)
        return mu, logvar.clamp(-10, 10)


class MelDecoder(nn.Module):
    """(z (B, latent_dim), condition (B, C)) -> (B, 1, M, F) normalised log-mel."""

    def __init__(self, n_mels: int, frames: int, latent_dim: int, width: int, cond_dim: int):
        super().__init__()
        self.n_mels, self.frames, self.width = n_mels, frames, width
        self.grid = (padded(n_mels) // DOWN, padded(frames) // DOWN)
        self.fc = nn.Sequential(nn.Linear(latent_dim + cond_dim, 2 * width * self.grid[0] * self.grid[1]), nn.SiLU())
        self.body = nn.Sequential(_deconv(2 * width, 2 * width), _deconv(2 * width, width), _deconv(width, width),
                                  nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, c], 1)).view(len(z), 2 * self.width, *self.grid)
        return self.body(h)[:, :, : self.n_mels, : self.frames]
