"""Learned conditional augmenter: a conditional VAE (Kingma & Welling 2014; Sohn et al. 2015) on log-mel
spectrograms, conditioned on the word/phrase label and a speaker code; audio back by Griffin-Lim.

Batches come from :class:`datamodules.speech.SpeechDataModule`: ``{audio (B, T), label (B,), speaker (B,)}``. The
log-mel front end runs on the module's device. Log-mels are standardised with one scalar mean/std estimated on the
first training batch (averaged over DDP ranks) and kept as buffers, so checkpoints carry them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.speech import AUDIO, LABEL, SPEAKER
from models.base import GeneratorModule
from models.nets.mel_vae import Condition, MelDecoder, MelEncoder, padded
from scarce import metrics as M
from scarce.errors import ConfigError, DataError, check_range
from speech.audio import AudioSet
from speech.mel import LogMel


class SpeechCVAE(GeneratorModule):
    """Conditional VAE on (B, 1, n_mels, frames) log-mels; ``generate`` returns an :class:`AudioSet`."""

    domain = "speech"

    def __init__(self, sample_rate: int, num_samples: int, num_classes: int, classes: Sequence[str] | None = None,
                 num_speakers: int = 0, speakers: Sequence[str] | None = None, n_mels: int = 40, n_fft: int = 512,
                 hop: int = 160, latent_dim: int = 32, width: int = 32, embed_dim: int = 16, beta: float = 1.0,
                 kl_warmup_steps: int = 200, griffin_lim_iters: int = 32,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None):
        super().__init__(optimizer, scheduler)
        for key, value, low in (("num_samples", num_samples, 1), ("num_classes", num_classes, 1),
                                ("num_speakers", num_speakers, 0), ("n_mels", n_mels, 8),
                                ("latent_dim", latent_dim, 1), ("width", width, 8), ("embed_dim", embed_dim, 1),
                                ("kl_warmup_steps", kl_warmup_steps, 0), ("griffin_lim_iters", griffin_lim_iters, 1),
                                ("hop", hop, 1), ("n_fft", n_fft, 16)):
            check_range(f"model.{key}", value, low, integer=True)
        if width % 8:
            raise ConfigError(f"model.width={width} is not allowed; expected a multiple of 8 (GroupNorm groups)")
        check_range("model.beta", beta, 0.0)
        if classes is not None and len(classes) != num_classes:
            raise ConfigError(f"model.classes has {len(classes)} names but model.num_classes={num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.classes = [str(c) for c in classes] if classes else [str(i) for i in range(num_classes)]
        self.speakers = [str(s) for s in speakers] if speakers else [str(i) for i in range(num_speakers)]
        self.mel = LogMel(sample_rate, n_fft, hop, n_mels)
        self.frames = self.mel.frames(num_samples)
        self.cond = Condition(num_classes, num_speakers, embed_dim)
        self.encoder = MelEncoder(n_mels, self.frames, latent_dim, width, self.cond.dim)
        self.decoder = MelDecoder(n_mels, self.frames, latent_dim, width, self.cond.dim)
        self.register_buffer("mel_stats", torch.tensor([0.0, 1.0]))  # scalar mean, std of training log-mels
        self.register_buffer("stats_ready", torch.tensor(False))

    # ------------------------------------------------------------------------------------------ pieces
    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> (B, 1, n_mels, frames) standardised log-mel."""
        m = self.mel(audio)[:, None]
        return (m - self.mel_stats[0]) / self.mel_stats[1]

    def _fit_stats(self, audio: torch.Tensor) -> None:
        m = self.mel(audio)
        stats = torch.stack([m.mean(), m.std()])
        if self.trainer is not None and getattr(self.trainer, "world_size", 1) > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="mean")
        self.mel_stats.copy_(stats)
        self.stats_ready.fill_(True)

    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, dict) or AUDIO not in batch or LABEL not in batch:
            raise DataError(f"SpeechCVAE expects dict batches with keys {AUDIO!r}, {LABEL!r}, {SPEAKER!r}")
        audio, label = batch[AUDIO], batch[LABEL]
        if audio.ndim != 2 or audio.shape[1] != self.hparams.num_samples:
            raise DataError(f"batch[{AUDIO!r}] has shape {tuple(audio.shape)}; model.num_samples expects "
                            f"(B, {self.hparams.num_samples})")
        speaker = batch.get(SPEAKER)
        speaker = torch.full_like(label, -1) if speaker is None else speaker
        return audio, label, speaker

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, padded(x.shape[-1]) - x.shape[-1], 0, padded(x.shape[-2]) - x.shape[-2]))

    def losses(self, batch: dict, sample: bool = True) -> dict[str, torch.Tensor]:
        """recon (mean squared error per log-mel bin, standardised units), kl (per sample, summed over latents)."""
        audio, label, speaker = self._unpack(batch)
        x = self.features(audio)
        c = self.cond(label, speaker)
        mu, logvar = self.encoder(self._pad(x), c)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        recon = self.decoder(z, c)
        mse = F.mse_loss(recon, x)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        return {"recon": mse, "kl": kl}

    def _beta(self) -> float:
        warm = self.hparams.kl_warmup_steps
        return self.hparams.beta * (min(1.0, self.global_step / warm) if warm else 1.0)

    # -------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not bool(self.stats_ready):
            self._fit_stats(batch[AUDIO])
        parts = self.losses(batch)
        n_el = self.hparams.n_mels * self.frames
        # Gaussian likelihood with unit variance in standardised units: 0.5 * squared error, per element
        loss = 0.5 * parts["recon"] + self._beta() * parts["kl"] / n_el
        self.log(M.name("train", "loss"), loss, prog_bar=True, batch_size=len(batch[LABEL]))
        self.log(M.name("train", "recon_mse"), parts["recon"], batch_size=len(batch[LABEL]))
        self.log(M.name("train", "kl"), parts["kl"], batch_size=len(batch[LABEL]))
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        parts = self.losses(batch, sample=False)
        n_el = self.hparams.n_mels * self.frames
        loss = 0.5 * parts["recon"] + self.hparams.beta * parts["kl"] / n_el
        bs = len(batch[LABEL])
        self.log(M.name(stage, "loss"), loss, prog_bar=stage == "val", batch_size=bs, sync_dist=True)
        self.log(M.name(stage, "recon_mse"), parts["recon"], batch_size=bs, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # ---------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def sample_mels(self, labels: torch.Tensor, speakers: torch.Tensor, generator: torch.Generator,
                    temperature: float = 1.0) -> torch.Tensor:
        """(B,) labels and speaker codes -> (B, n_mels, frames) log-mel (natural log, unstandardised)."""
        z = torch.randn((len(labels), self.hparams.latent_dim), generator=generator).to(self.device) * temperature
        c = self.cond(labels.to(self.device), speakers.to(self.device))
        x = self.decoder(z, c)[:, 0]
        return x * self.mel_stats[1] + self.mel_stats[0]

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, labels: torch.Tensor | None = None,
                 speakers: torch.Tensor | None = None, temperature: float = 1.0, batch_size: int = 64,
                 progress: bool = False) -> AudioSet:
        """``n`` clips: balanced labels and training speakers in turn unless given; (n, T) audio via Griffin-Lim."""
        check_range("n", n, 1, integer=True)
        k, s = self.hparams.num_classes, max(self.hparams.num_speakers, 1)
        i = torch.arange(n)
        labels = i % k if labels is None else torch.as_tensor(labels, dtype=torch.long)
        speakers = (i // k) % s if speakers is None else torch.as_tensor(speakers, dtype=torch.long)
        if len(labels) != n or len(speakers) != n:
            raise ConfigError(f"generate: {len(labels)} labels and {len(speakers)} speakers for n={n} clips")
        if labels.min() < 0 or labels.max() >= k:
            raise ConfigError(f"generate: label indices must be in 0..{k - 1} ({self.classes})")
        g = torch.Generator().manual_seed(int(seed))
        self.eval()
        waves = []
        for a in range(0, n, batch_size):
            mel = self.sample_mels(labels[a:a + batch_size], speakers[a:a + batch_size], g, temperature)
            waves.append(self.mel.invert(mel, self.hparams.num_samples, self.hparams.griffin_lim_iters).cpu())
        names = np.asarray([self.speakers[int(j)] if 0 <= int(j) < len(self.speakers) else "any"
                            for j in speakers])
        return AudioSet(torch.cat(waves).numpy().astype(np.float32), labels.numpy().astype(np.int64),
                        list(self.classes), names, int(self.hparams.sample_rate), source="SpeechCVAE",
                        meta={"temperature": temperature})
