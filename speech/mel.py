"""Log-mel spectrograms and their inversion to audio (mel pseudo-inverse + Griffin-Lim), batched on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOG_FLOOR = 1e-5  # power floor before the log: -115 dB, below 16-bit quantisation noise


class LogMel(nn.Module):
    """(B, T) waveform -> (B, n_mels, frames) natural-log mel power; ``invert`` goes back to (B, T') audio.

    sample_rate Hz; n_fft, hop samples; f_min/f_max Hz. Filterbank and window are buffers, so ``.to(device)`` moves
    them with the module.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 160, n_mels: int = 40,
                 f_min: float = 20.0, f_max: float | None = None):
        super().__init__()
        import torchaudio.functional as AF

        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        fb = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate,
                                norm="slaney", mel_scale="slaney")  # (F, n_mels)
        self.register_buffer("fb", fb, persistent=False)
        self.register_buffer("fb_pinv", torch.linalg.pinv(fb), persistent=False)  # (n_mels, F)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` samples (centred STFT)."""
        return num_samples // self.hop + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, F, frames)
        mel = torch.einsum("bft,fm->bmt", power, self.fb)
        return torch.log(mel.clamp_min(LOG_FLOOR))

    @torch.no_grad()
    def invert(self, log_mel: torch.Tensor, num_samples: int, n_iter: int = 32) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, num_samples) audio: linear magnitude by the filterbank's
        pseudo-inverse (clamped at 0), phase by Griffin-Lim (Griffin & Lim 1984) with momentum 0.99
        (Perraudin et al. 2013)."""
        import torchaudio.functional as AF

        power = torch.einsum("bmt,mf->bft", log_mel.float().exp(), self.fb_pinv).clamp_min(0)
        mag = power.sqrt()
        wave = AF.griffinlim(mag, self.window, self.n_fft, self.hop, self.n_fft, power=1.0, n_iter=n_iter,
                             momentum=0.99, length=num_samples, rand_init=False)
        peak = wave.abs().amax(1, keepdim=True).clamp_min(1e-8)
        return torch.where(peak > 0.99, wave / peak * 0.99, wave)  # no clipping when written as 16-bit PCM


def spec_augment(log_mel: torch.Tensor, generator: torch.Generator, freq_width: int = 6, time_width: int = 10,
                 masks: int = 2) -> torch.Tensor:
    """SpecAugment's masking (Park et al. 2019) on (B, n_mels, frames): ``masks`` frequency bands of up to
    ``freq_width`` bins and as many time spans of up to ``time_width`` frames, set to each clip's mean."""
    b, m, t = log_mel.shape
    out = log_mel.clone()
    mean = log_mel.mean(dim=(1, 2), keepdim=True)
    for size, width, axis in ((m, freq_width, 1), (t, time_width, 2)):
        for _ in range(masks):
            w = torch.randint(0, width + 1, (b, 1), generator=generator)
            start = (torch.rand((b, 1), generator=generator) * (size - w).clamp_min(1)).long()
            pos = torch.arange(size)[None]
            hit = ((pos >= start) & (pos < start + w)).to(log_mel.device)  # (B, size)
            hit = hit[:, :, None] if axis == 1 else hit[:, None, :]
            out = torch.where(hit, mean, out)
    return out


def normalise(log_mel: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Standardise with the training set's scalar mean/std (what the nets see)."""
    return (log_mel - mean) / max(std, 1e-6)


def pad_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to ``frames``."""
    return x[..., :frames] if x.shape[-1] >= frames else F.pad(x, (0, frames - x.shape[-1]))
