"""Conditional GAN for small image sets, as a LightningModule with manual optimisation.

Hinge loss (Lim & Ye 2017; Miyato et al. 2018) or the non-saturating loss (Goodfellow et al. 2014), a projection
discriminator with spectral norm (Miyato & Koyama 2018), DiffAugment on everything D sees (Zhao et al. 2020), an
optional lazy R1 penalty on reals (Mescheder et al. 2018; lazy as in Karras et al. 2020), an optional mode-seeking
term against per-class collapse (Mao et al. 2019) and an EMA generator (Yazici et al. 2019) that validation, grids
and :meth:`ConditionalGAN.generate` sample from.

Conditions: a class label (single or multi-label) and/or a parameter vector become one vector per sample (separate
embeddings for G and D); a condition image (e.g. a simulated projection) enters G at every resolution and D as
extra input channels, and is augmented together with the image it belongs to.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.image_set import COND, IMAGE, LABEL, PARAMS, ImageSet, to_uint8
from evaluation.image_metrics import frechet_distance
from models.augment import DiffAugment
from models.base import GeneratorModule
from models.ema import ema_copy, ema_update
from models.nets.conditioning import make_condition_embedding
from models.nets.gan import Discriminator, Generator, resolution_plan, spectral_norm_all
from models.visuals import grid_labels, log_sample_grid
from scarce import metrics as M
from scarce.errors import ConfigError, DataError, check_choice, check_range

VAL_SEED = 12345  # latents for validation fakes: fixed, so val/loss moves only when the EMA generator does
GRID_SEED = 0
FEATURE_SEED = 0  # weights of the fixed random feature network behind val/loss
MS_EPS = 1e-5  # MSGAN's epsilon in weight / (ratio + eps)


# ---------------------------------------------------------------------------------------------------- losses
def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)); logits (B,)."""
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """G hinge loss: -mean D(fake)."""
    return -fake.float().mean()


def nonsaturating_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D logistic loss: mean softplus(-D(real)) + mean softplus(D(fake))."""
    return F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()


def nonsaturating_g(fake: torch.Tensor) -> torch.Tensor:
    """G non-saturating loss: mean softplus(-D(fake)) = -mean log sigmoid(D(fake))."""
    return F.softplus(-fake.float()).mean()


LOSSES: dict[str, tuple[Callable, Callable]] = {"hinge": (hinge_d, hinge_g),
                                                "nonsaturating": (nonsaturating_d, nonsaturating_g)}


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 = mean over the batch of ||d D(x) / d x||^2 at the reals; differentiable (create_graph) for D's update."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).sum(dim=(1, 2, 3)).mean()


def pair_conditions(t: torch.Tensor | None) -> torch.Tensor | None:
    """(B, ...) -> (B, ...) with entries B//2 .. 2*(B//2)-1 replaced by entries 0 .. B//2-1, so pairs share a condition."""
    if t is None:
        return None
    h = len(t) // 2
    idx = torch.arange(len(t), device=t.device)
    idx[h:2 * h] = idx[:h]
    return t[idx]


def mode_seeking_ratio(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN's ratio (Mao et al. 2019): mean |G(z1) - G(z2)| / mean |z1 - z2| over the pairs (i, i + B//2).

    With the pairs sharing a condition (:func:`pair_conditions`), a generator that ignores z scores 0; G's loss adds
    weight / (ratio + eps), so collapse inside a class costs more and more."""
    h = len(fake) // 2
    if h == 0:
        raise ValueError("the mode-seeking term needs a batch of at least 2")
    num = (fake[:h].float() - fake[h:2 * h].float()).abs().mean()
    return num / (z[:h] - z[h:2 * h]).abs().mean()


class ConditionedNet(nn.Module):
    """A G or D net with its own condition embedding: (x or z, label, params, cond) -> the net's output."""

    def __init__(self, net: nn.Module, embed: nn.Module | None):
        super().__init__()
        self.net, self.embed = net, embed

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, params: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        c = None if self.embed is None else self.embed(label, params)  # (B, embed_dim)
        return self.net(x, c, cond)


# --------------------------------------------------------------------------------------- validation features
class _Moments:
    """Running count, sum and sum of outer products of (B, D) features (float64, CPU): mean and covariance."""

    def __init__(self):
        self.n, self.s1, self.s2 = 0, None, None

    def add(self, f: torch.Tensor) -> None:
        f = f.detach().double().cpu()
        self.n += len(f)
        self.s1 = f.sum(0) if self.s1 is None else self.s1 + f.sum(0)
        self.s2 = f.T @ f if self.s2 is None else self.s2 + f.T @ f

    def reduce(self, strategy) -> None:
        """Sum over DDP ranks (a no-op on one process)."""
        if strategy is None or getattr(strategy, "world_size", 1) <= 1 or self.s1 is None:
            return
        dev = strategy.root_device
        n = strategy.reduce(torch.tensor(float(self.n), dtype=torch.float64, device=dev), reduce_op="sum")
        self.n = int(n.item())
        self.s1 = strategy.reduce(self.s1.to(dev), reduce_op="sum").cpu()
        self.s2 = strategy.reduce(self.s2.to(dev), reduce_op="sum").cpu()

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        mu = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(mu, mu)) / max(self.n - 1, 1)
        return mu.numpy(), cov.numpy()


def random_feature_weights(channels: int, device: torch.device, seed: int = FEATURE_SEED) -> list[torch.Tensor]:
    """He-initialised weights of a fixed 3-layer strided conv net (channels -> 32 -> 64 -> 128), same on any machine."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(32, channels, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3)]
    return [(torch.randn(s, generator=gen) * (2.0 / (s[1] * 9)) ** 0.5).to(device) for s in shapes]


def random_features(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 16 C + 224): 4x4 area-pooled pixels (layout) + channel means of each layer."""
    feats = [F.adaptive_avg_pool2d(x.float(), 4).flatten(1)]  # coarse layout: where things are bright
    h = x.float()
    for w in weights:
        h = F.leaky_relu(F.conv2d(h, w.float(), stride=2, padding=1), 0.2)
        feats.append(h.mean(dim=(2, 3)))  # texture statistics at this scale
    return torch.cat(feats, 1)


# --------------------------------------------------------------------------------------------------- module
class ConditionalGAN(GeneratorModule):
    """Conditional GAN; batches are dicts with image (B, C, S, S) in [-1, 1] and optional label / params / cond.

    val/loss is a Frechet distance between validation reals and EMA-G fakes (same labels/conditions, fixed latents)
    in the feature space of a fixed, randomly initialised conv net plus 4x4 pooled pixels. It is deterministic and
    falls as fakes match the reals' layout, colour and texture statistics, so it ranks checkpoints of one run; it is
    NOT an Inception FID (not comparable across datasets, image sizes or runs with other validation sets), is biased
    upwards for small validation sets, and is blind to structure a random network does not encode.
    """

    domain = "image"

    def __init__(
        self,
        image_size: int,
        channels: int,
        num_classes: int = 0,
        multi_label: bool = False,
        classes: Sequence[str] | None = None,
        cond_channels: int = 0,
        num_params: int = 0,
        z_dim: int = 128,
        g_width: int = 64,
        d_width: int = 64,
        embed_dim: int = 128,
        loss: str = "hinge",
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        mode_seeking: float = 0.0,
        d_steps: int = 1,
        diffaug: str | Sequence[str] | None = "color,translation,cutout",
        ema_decay: float = 0.999,
        ema_start: int = 0,
        grid_every_n_epochs: int = 5,
        grid_per_class: int = 8,
        compile: bool = False,
        optimizer_g: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__(None, scheduler)
        resolution_plan(image_size)
        for key, value, low in (("channels", channels, 1), ("num_classes", num_classes, 0),
                                ("cond_channels", cond_channels, 0), ("num_params", num_params, 0),
                                ("z_dim", z_dim, 1), ("g_width", g_width, 1), ("d_width", d_width, 1),
                                ("embed_dim", embed_dim, 1), ("r1_every", r1_every, 1), ("d_steps", d_steps, 1),
                                ("ema_start", ema_start, 0), ("grid_every_n_epochs", grid_every_n_epochs, 0),
                                ("grid_per_class", grid_per_class, 1)):
            check_range(f"model.{key}", value, low, integer=True)
        check_choice("model.loss", loss, LOSSES)
        check_range("model.r1_gamma", r1_gamma, 0.0)
        check_range("model.mode_seeking", mode_seeking, 0.0)
        check_range("model.ema_decay", ema_decay, 0.0, 1.0, high_inclusive=False)
        if multi_label and not num_classes:
            raise ConfigError("model.multi_label=true needs model.num_classes >= 1 (the number of label columns)")
        if classes is not None and num_classes and len(classes) != num_classes:
            raise ConfigError(f"model.classes has {len(classes)} names but model.num_classes={num_classes}")
        self.augment = DiffAugment(diffaug)  # checks the policy before anything is built
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d", "scheduler"])
        self.automatic_optimization = False
        self._opt_g, self._opt_d = optimizer_g, optimizer_d
        self.classes = [str(c) for c in classes] if classes else [str(i) for i in range(num_classes)]
        self.loss_d, self.loss_g = LOSSES[loss]

        cond_dim = embed_dim if (num_classes or num_params) else 0
        self.generator = ConditionedNet(
            Generator(z_dim, channels, image_size, g_width, cond_channels, cond_dim),
            make_condition_embedding(embed_dim, num_classes, num_params, multi_label))
        d_embed = make_condition_embedding(embed_dim, num_classes, num_params, multi_label)
        self.discriminator = ConditionedNet(
            Discriminator(channels, image_size, d_width, cond_channels, cond_dim),
            spectral_norm_all(d_embed) if d_embed is not None else None)  # D stays Lipschitz through its embedding
        self.generator_ema = ema_copy(self.generator)
        self._g_count = self._d_count = 0  # optimizer steps taken (Lightning's global_step counts both optimizers)
        self._rng: torch.Generator | None = None  # per-rank stream for latents and augmentation
        self._compiled: dict[str, Callable] = {}  # plain dict: compiled wrappers stay out of the state dict
        self._grid_src: dict[str, torch.Tensor] | None = None  # conditions for sample grids, from the first batch
        self._val: dict[str, _Moments] = {}
        self._feat_w: list[torch.Tensor] | None = None

    # -------------------------------------------------------------------------------------------- set-up
    def configure_optimizers(self):
        default = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.0, 0.99))
        opt_g = (self._opt_g or default)(params=self.generator.parameters())
        opt_d = (self._opt_d or default)(params=self.discriminator.parameters())
        if self._scheduler_factory is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self._scheduler_factory(optimizer=opt_g), self._scheduler_factory(optimizer=opt_d)]

    def on_fit_start(self) -> None:
        # seed_everything sets the global seed; each DDP rank draws its own latents and augmentations from it
        seed = (torch.initial_seed() + 1_000_003 * self.global_rank) % 2**63
        self._rng = torch.Generator(device=self.device).manual_seed(seed)
        if self.hparams.compile and self.device.type == "cuda":
            self._compiled = {"g": torch.compile(self.generator), "d": torch.compile(self.discriminator)}

    def _net(self, name: str) -> Callable:
        if name in self._compiled:
            return self._compiled[name]
        return self.generator if name == "g" else self.discriminator

    # --------------------------------------------------------------------------------------------- batch
    def _unpack(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                              torch.Tensor | None]:
        """batch dict -> (image, label, params, cond), each checked against the model's configuration."""
        hp = self.hparams
        if not isinstance(batch, dict) or IMAGE not in batch:
            raise DataError(f"ConditionalGAN expects dict batches with key {IMAGE!r}; got {type(batch).__name__}")
        x = batch[IMAGE]
        want = (hp.channels, hp.image_size, hp.image_size)
        if tuple(x.shape[1:]) != want:
            raise DataError(f"batch[{IMAGE!r}] has shape {tuple(x.shape)}; model.channels/model.image_size "
                            f"expect (B, {', '.join(map(str, want))})")
        out = [x]
        for key, needed in ((LABEL, hp.num_classes), (PARAMS, hp.num_params), (COND, hp.cond_channels)):
            if needed and batch.get(key) is None:
                raise DataError(f"the model is configured with model.{_CONFIG_KEY[key]}={needed} but the batch has "
                                f"no {key!r}; the datamodule must provide it")
            out.append(batch.get(key) if needed else None)
        return tuple(out)  # type: ignore[return-value]

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.z_dim, device=self.device, generator=self._rng)

    def _d(self, net: Callable, x: torch.Tensor, label, params, cond) -> torch.Tensor:
        """D logits (B,) on DiffAugmented input; image and condition image get one joint spatial transform."""
        if self.augment:
            c = x.shape[1]
            xa = self.augment(x if cond is None else torch.cat([x, cond.to(x.dtype)], 1), c, self._rng)
            x, cond = xa[:, :c], (None if cond is None else xa[:, c:])
        return net(x, label, params, cond)

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        x, label, params, cond = self._unpack(batch)
        if self._grid_src is None:
            self._cache_grid_source(label, params, cond)
        opt_g, opt_d = self.optimizers()
        hp, b = self.hparams, len(x)
        gen_net, disc_net = self._net("g"), self._net("d")

        for _ in range(hp.d_steps):  # each D step reuses this batch's reals against fresh fakes
            self.toggle_optimizer(opt_d)
            with torch.no_grad():
                fake = gen_net(self._z(b), label, params, cond)
            r1_due = hp.r1_gamma > 0 and self._d_count % hp.r1_every == 0
            real = x.detach().requires_grad_(r1_due)
            # torch.compile has no double backward: the R1 step runs D eagerly
            d_real = self._d(self.discriminator if r1_due else disc_net, real, label, params, cond)
            d_fake = self._d(disc_net, fake, label, params, cond)
            d_loss = self.loss_d(d_real, d_fake)
            total = d_loss
            if r1_due:
                r1 = r1_penalty(d_real, real)
                total = total + 0.5 * hp.r1_gamma * hp.r1_every * r1  # lazy: scaled up by its interval
                self.log(M.name("train", "r1"), r1.detach(), on_step=True, on_epoch=True, batch_size=b,
                         sync_dist=True)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(total)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            self._d_count += 1

        self.toggle_optimizer(opt_g)
        z = self._z(b)
        if hp.mode_seeking > 0 and b >= 2:  # pairs (i, i + b//2) share a condition, so only z tells them apart
            label, params, cond = (pair_conditions(t) for t in (label, params, cond))
        fake = gen_net(z, label, params, cond)
        g_loss = self.loss_g(self._d(disc_net, fake, label, params, cond))
        g_total = g_loss
        if hp.mode_seeking > 0 and b >= 2:
            ratio = mode_seeking_ratio(fake, z)
            g_total = g_loss + hp.mode_seeking / (ratio + MS_EPS)
            self.log(M.name("train", "ms_ratio"), ratio.detach(), on_step=False, on_epoch=True, batch_size=b,
                     sync_dist=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self._g_count += 1
        self._update_ema()

        self.log(M.name("train", "d_loss"), d_loss.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=b, sync_dist=True)
        self.log(M.name("train", "g_loss"), g_loss.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=b, sync_dist=True)

    def _update_ema(self) -> None:
        start = self.hparams.ema_start
        if self._g_count <= start:  # before ema_start the average simply follows G
            ema_update(self.generator_ema, self.generator, 0.0)
        else:
            ema_update(self.generator_ema, self.generator, self.hparams.ema_decay, step=self._g_count - start - 1,
                       warmup=1)

    def on_train_epoch_end(self) -> None:
        for sch in _as_list(self.lr_schedulers()):
            if isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if M.VAL_LOSS in self.trainer.callback_metrics:
                    sch.step(self.trainer.callback_metrics[M.VAL_LOSS])
            else:
                sch.step()
        every = self.hparams.grid_every_n_epochs
        if (every and (self.current_epoch + 1) % every == 0 and self.trainer.is_global_zero
                and self._grid_src is not None):
            labels, params, cond = self._grid_inputs()
            z = torch.randn(len(labels), self.hparams.z_dim, generator=torch.Generator().manual_seed(GRID_SEED))
            with torch.no_grad():
                images = self.generator_ema(z.to(self.device), *self._to_device(labels, params, cond))
            log_sample_grid(self, images, per_row=self.hparams.grid_per_class)

    # ---------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val = {"real": _Moments(), "fake": _Moments()}
        if self._feat_w is None or self._feat_w[0].device != self.device:
            self._feat_w = random_feature_weights(self.hparams.channels, self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, label, params, cond = self._unpack(batch)
        gen = torch.Generator().manual_seed(VAL_SEED + 1_000_003 * self.global_rank + batch_idx)
        z = torch.randn(len(x), self.hparams.z_dim, generator=gen).to(self.device)
        fake = self.generator_ema(z, label, params, cond)
        self._val["real"].add(random_features(x, self._feat_w))
        self._val["fake"].add(random_features(fake, self._feat_w))

    def on_validation_epoch_end(self) -> None:
        self._log_distance(M.VAL_LOSS)

    # the same distance on the real test split (train.py's `test: true`)
    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._log_distance(M.name("test", "loss"))

    def _log_distance(self, key: str) -> None:
        real, fake = self._val["real"], self._val["fake"]
        if not real.n:
            return
        for m in (real, fake):
            m.reduce(self.trainer.strategy)
        fd = max(frechet_distance(*real.stats(), *fake.stats()), 0.0)
        # identical on every rank after the reduction, so no further sync
        self.log(key, torch.tensor(fd, dtype=torch.float32), prog_bar=True)

    # ------------------------------------------------------------------------------------------ sampling
    def _cache_grid_source(self, label, params, cond) -> None:
        k, self._grid_src = self.hparams.grid_per_class, {}
        for key, t in ((PARAMS, params), (COND, cond)):
            if t is not None:
                idx = torch.arange(k) % len(t)  # repeat cyclically when the batch is smaller than a grid row
                self._grid_src[key] = t.detach()[idx.to(t.device)].float().cpu()

    def _grid_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """One row per class (first 10), grid_per_class columns; column j shares condition image/params j."""
        hp = self.hparams
        rows = grid_labels(hp.num_classes, hp.grid_per_class) if hp.num_classes else torch.zeros(
            4 * hp.grid_per_class, dtype=torch.long)
        n = len(rows)
        labels = None
        if hp.num_classes:
            labels = F.one_hot(rows, hp.num_classes).float() if hp.multi_label else rows
        reps = n // hp.grid_per_class
        params = self._grid_src[PARAMS].repeat(reps, 1) if PARAMS in self._grid_src else None
        cond = self._grid_src[COND].repeat(reps, 1, 1, 1) if COND in self._grid_src else None
        return labels, params, cond

    def _to_device(self, *ts: torch.Tensor | None) -> list[torch.Tensor | None]:
        return [None if t is None else t.to(self.device) for t in ts]

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, labels: Any = None, cond: Any = None, params: Any = None,
                 batch_size: int = 256, progress: bool = False, **_: Any) -> ImageSet:
        """``n`` images from the EMA generator -> ImageSet with uint8 (n, S, S, C) images; same seed, same images.

        labels: (n,) class indices or (n, K) multi-hot; default i % num_classes (one-hot of it for multi-label).
        cond: (n, cond_channels, S, S) float in [-1, 1]; params: (n, num_params) float; required when configured.
        """
        hp = self.hparams
        check_range("n", n, 1, integer=True)
        check_range("batch_size", batch_size, 1, integer=True)
        label_t = self._generation_labels(n, labels)
        params_t = self._generation_input("params", params, n, (hp.num_params,), "num_params")
        cond_t = self._generation_input("cond", cond, n, (hp.cond_channels, hp.image_size, hp.image_size),
                                        "cond_channels")
        z = torch.randn(n, hp.z_dim, generator=torch.Generator().manual_seed(seed))  # all latents up front:
        out = []  # the images do not depend on batch_size
        from tqdm.auto import tqdm

        for i in tqdm(range(0, n, batch_size), desc="sampling images", unit="batch", disable=not progress,
                      leave=False):
            sl = slice(i, i + batch_size)
            parts = self._to_device(*(None if t is None else t[sl] for t in (label_t, params_t, cond_t)))
            out.append(to_uint8(self.generator_ema(z[sl].to(self.device), *parts)))
        if label_t is None:
            label_np = np.zeros(n, dtype=np.int64)  # unconditional: one class
        else:
            label_np = label_t.cpu().numpy().astype(np.int64)
        return ImageSet(np.concatenate(out), label_np, list(self.classes) or ["image"], source="ConditionalGAN",
                        meta={"seed": seed, "generator": "ConditionalGAN"})

    def _generation_labels(self, n: int, labels: Any) -> torch.Tensor | None:
        hp = self.hparams
        if not hp.num_classes:
            if labels is not None:
                raise ConfigError("labels were given but this model has no classes (model.num_classes=0)")
            return None
        if labels is None:
            idx = torch.arange(n) % hp.num_classes  # balanced classes
            return F.one_hot(idx, hp.num_classes).float() if hp.multi_label else idx
        t = torch.as_tensor(np.asarray(labels))
        want = (n, hp.num_classes) if hp.multi_label else (n,)
        if tuple(t.shape) != want:
            raise ConfigError(f"labels has shape {tuple(t.shape)}; expected {want} for this model")
        if hp.multi_label:
            if not bool(((t == 0) | (t == 1)).all()):
                raise ConfigError("labels: a multi-label model takes (n, K) arrays of 0/1")
            return t.float()
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.min() < 0 or t.max() >= hp.num_classes:
            raise ConfigError(f"labels must be integer class indices in [0, {hp.num_classes - 1}] "
                              f"(classes {self.classes[:10]}{' ...' if hp.num_classes > 10 else ''})")
        return t.long()

    def _generation_input(self, key: str, value: Any, n: int, shape: tuple[int, ...],
                          config_key: str) -> torch.Tensor | None:
        needed = getattr(self.hparams, config_key)
        if not needed:
            if value is not None:
                raise ConfigError(f"{key} was given but this model takes none (model.{config_key}=0)")
            return None
        if value is None:
            raise ConfigError(f"this model is conditioned on {key} (model.{config_key}={needed}); pass {key} of "
                              f"shape {(n, *shape)}")
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if tuple(t.shape) != (n, *shape):
            raise ConfigError(f"{key} has shape {tuple(t.shape)}; expected {(n, *shape)}")
        if not t.dtype.is_floating_point:
            raise ConfigError(f"{key} must be float ({'[-1, 1] images' if key == 'cond' else 'values'}); "
                              f"got {t.dtype}")
        return t.float()

    # -------------------------------------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {"g_steps": self._g_count, "d_steps": self._d_count}

    def load_extra_state(self, state: dict) -> None:
        self._g_count = int(state.get("g_steps", 0))
        self._d_count = int(state.get("d_steps", 0))


_CONFIG_KEY = {LABEL: "num_classes", PARAMS: "num_params", COND: "cond_channels"}


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
