"""Tabular VAE (TVAE, Xu et al., NeurIPS 2019) as a LightningModule.

The loss and the sampler walk the transformer's published layout: ``tanh`` spans are Gaussian with a learned scale,
``softmax`` spans are categorical. The fitted transformer travels inside the checkpoint as plain data, so
``generate.py`` needs nothing but the checkpoint (and, for the identifier check, the real table it names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from datamodules.table_transformer import TableTransformer
from models.base import GeneratorModule
from models.nets.tvae import TVAE, TVAEConfig
from scarce import metrics as M
from scarce.errors import ConfigError, DataError, check_range


class TabularVAE(GeneratorModule):
    def __init__(
        self,
        layout: Sequence[Mapping[str, Any]],
        latent_dim: int = 128,
        compress_dims: Sequence[int] = (128, 128),
        decompress_dims: Sequence[int] = (128, 128),
        loss_factor: float = 2.0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        transformer_state: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ):
        super().__init__(optimizer, scheduler)
        check_range("model.latent_dim", latent_dim, 1, integer=True)
        check_range("model.loss_factor", loss_factor, 0.0, low_inclusive=False)
        for key, dims in (("model.compress_dims", compress_dims), ("model.decompress_dims", decompress_dims)):
            for d in dims:
                check_range(key, d, 1, integer=True)
        if not layout:
            raise DataError("the table has no modelled columns (all identifiers or constants): nothing to learn")
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "transformer_state", "source"])
        self.layout = [dict(s) for s in layout]
        data_dim = max(s["start"] + s["width"] for s in self.layout)
        self.net = TVAE(TVAEConfig(data_dim, latent_dim, tuple(compress_dims), tuple(decompress_dims)))
        self.loss_factor = loss_factor
        self.register_buffer("tanh_idx", torch.tensor([s["start"] for s in self.layout if s["activation"] == "tanh"],
                                                      dtype=torch.long), persistent=False)
        self.softmax_spans = [(s["start"], s["start"] + s["width"]) for s in self.layout if s["activation"] == "softmax"]
        self.transformer = TableTransformer.from_state_dict(transformer_state) if transformer_state else None
        self.source = dict(source or {})

    # ---------------------------------------------------------------------------------------------------- loss
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO per row: Gaussian NLL on tanh dims, cross-entropy on softmax spans, KL to N(0, I)."""
        recon, sigma, mu, logvar = self.net(x)
        b = x.shape[0]
        idx = self.tanh_idx
        s = sigma[idx]
        nll = (((x[:, idx] - torch.tanh(recon[:, idx])) ** 2) / (2 * s**2)).sum() + torch.log(s).sum() * b
        # A loop over spans measured faster than one padded gather (the widest span sets the padding).
        for lo, hi in self.softmax_spans:
            nll = nll + F.cross_entropy(recon[:, lo:hi], x[:, lo:hi].argmax(1), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
        recon_term = self.loss_factor * nll / b
        return {"loss": recon_term + kld / b, "recon": recon_term, "kld": kld / b}

    def _step(self, batch, stage: str) -> torch.Tensor:
        (x,) = batch
        out = self.loss(x)
        # epoch means reduced across DDP ranks (a no-op on one device); the step loss shows in the progress bar
        self.log(M.name(stage, "loss"), out["loss"], prog_bar=True, on_step=stage == "train", on_epoch=True,
                 batch_size=len(x), sync_dist=True)
        for what in ("recon", "kld"):
            self.log(M.name(stage, what), out[what], on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return out["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self.net.decoder.sigma.clamp_(0.01, 1.0)

    # ---------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_matrix(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> np.ndarray:
        """n rows in the transformed space: tanh dims get their learned noise, softmax spans a sampled one-hot."""
        was_training = self.training
        self.eval()
        z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        recon, sigma = self.net.decoder(z)
        recon, sigma = recon.float().cpu(), sigma.float().cpu()
        out = torch.zeros_like(recon)
        idx = self.tanh_idx.cpu()
        noise = torch.randn(n, len(idx), generator=generator) * sigma[idx]
        out[:, idx] = (torch.tanh(recon[:, idx]) + noise).clamp(-1, 1)
        for lo, hi in self.softmax_spans:
            probs = torch.softmax(recon[:, lo:hi] / temperature, dim=1)
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            out[torch.arange(n), lo + pick] = 1.0
        self.train(was_training)
        return out.numpy()

    def generate(
        self,
        n: int,
        seed: int = 0,
        condition: Mapping[str, Any] | None = None,
        real_identifiers: Mapping[str, Any] | None = None,
        batch_size: int = 50_000,
        max_draws: int = 100,
        progress: bool = False,
    ) -> pd.DataFrame:
        """``n`` synthetic rows. ``condition`` ({column: value}) keeps only matching rows (rejection sampling)."""
        if self.transformer is None:
            raise DataError("this model has no fitted transformer; train it or load it from a checkpoint")
        check_range("n", n, 1, integer=True)
        condition = self._check_condition(condition or {})
        gen = torch.Generator().manual_seed(seed)
        kept: list[pd.DataFrame] = []
        have, drawn = 0, 0
        bar = _progress(n, progress)
        for draw in range(max_draws):
            m = min(batch_size, max(n - have, 1)) if not condition else batch_size
            mat = self.sample_matrix(m, gen)
            df = self.transformer.inverse_transform(mat, identifiers_real=real_identifiers, seed=seed * 1_000_003 + draw)
            drawn += m
            if condition:
                mask = np.ones(len(df), dtype=bool)
                for col, value in condition.items():
                    mask &= (df[col].astype(object) == value).to_numpy()
                df = df[mask]
            kept.append(df)
            bar.update(min(len(df), n - have))
            have += len(df)
            if have >= n:
                break
        bar.close()
        if have < n:
            rate = have / max(drawn, 1)
            raise DataError(
                f"condition={dict(condition)}: only {have} of {n} rows matched in {drawn} draws "
                f"(acceptance {rate:.2%}); the model rarely produces this combination; ask for fewer rows or "
                "a more common condition"
            )
        return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)

    def _check_condition(self, condition: Mapping[str, Any]) -> dict[str, Any]:
        t = self.transformer
        out = {}
        for col, value in dict(condition).items():
            if col not in t.categorical:
                allowed = sorted(t.categorical)
                if col in t.schema.columns:
                    raise ConfigError(
                        f"condition: column {col!r} is {t.schema.columns[col].kind}; conditions apply to categorical "
                        f"columns {allowed}"
                    )
                raise ConfigError(f"condition: unknown column {col!r}; conditional columns are {allowed}")
            info = t.categorical[col]
            levels = [v for v in info["levels"] if not isinstance(v, tuple)] + list(info["tail"])
            match = [v for v in levels if v == value or str(v) == str(value)]
            if not match:
                shown = ", ".join(map(repr, levels[:20])) + (" ..." if len(levels) > 20 else "")
                raise ConfigError(f"condition.{col}={value!r} was never seen; allowed values: {shown}")
            out[col] = match[0]
        return out

    # ------------------------------------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {"transformer": self.transformer.state_dict() if self.transformer else None, "source": self.source}

    def load_extra_state(self, state: dict) -> None:
        if state.get("transformer"):
            self.transformer = TableTransformer.from_state_dict(state["transformer"])
        self.source = dict(state.get("source") or {})


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling rows", unit="row", disable=not enabled, leave=False)
