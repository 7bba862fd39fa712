"""Conditional denoising diffusion (Ho et al. 2020) as a LightningModule.

Conditions: a class label (or multi-hot labels), a parameter vector (e.g. an imaging protocol) and condition-image
channels (e.g. a simulated scan). Labels/params are dropped with probability ``p_uncond`` during training so one
net serves both branches of classifier-free guidance (Ho & Salimans 2022). Sampling always uses the EMA copy.
The schedule, the denoiser and the samplers live in :mod:`models.sampling`; the network in
:mod:`models.nets.unet`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.image_set import (
    COND,
    IMAGE,
    LABEL,
    NULL_LABEL,
    PARAMS,
    ImageSet,
    to_uint8,
)
from models.base import GeneratorModule
from models.ema import ema_copy, ema_update
from models.nets.unet import ConditionalUNet, check_image_size
from models.sampling import (
    PREDICTIONS,
    CosineSchedule,
    Denoiser,
    check_steps,
    draw_noise,
    get_sampler,
    sdedit,
    spaced_timesteps,
)
from models.visuals import grid_labels, log_sample_grid
from scarce import metrics as M
from scarce.errors import ConfigError, DataError, check_choice, check_range

GRID_STEPS = 25  # sampler steps for the per-epoch grid: a glance, not a benchmark


class ConditionalDiffusion(GeneratorModule):
    """A conditional DDPM on (B, C, H, W) images in [-1, 1]; ``generate`` returns an :class:`ImageSet`.

    image_size: H (= W) in pixels; channels: image channels (1 grey, 3 RGB)
    num_classes / multi_label / classes: label conditioning (0 = none) and the class names written with samples
    cond_channels: condition-image channels in batch["cond"]; num_params: length of batch["params"]
    width, channel_mults, num_res_blocks, attention_resolutions, dropout: the U-Net (see :class:`UNet`)
    timesteps: T of the cosine schedule; prediction: "eps" (Ho et al. 2020) or "v" (Salimans & Ho 2022)
    p_uncond: probability of dropping label/params in training (classifier-free guidance)
    ema_decay, ema_warmup: weight averaging of the sampling net; sampler, sample_steps, guidance_scale: defaults
    of :meth:`generate`; grid_every_n_epochs (0 = never), grid_per_class: the sample grid logged while training
    compile: torch.compile the training net when on CUDA
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
        width: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        timesteps: int = 1000,
        prediction: str = "eps",
        p_uncond: float = 0.1,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        sampler: str = "ddim",
        sample_steps: int = 50,
        guidance_scale: float = 1.0,
        grid_every_n_epochs: int = 5,
        grid_per_class: int = 8,
        compile: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__(optimizer, scheduler)
        for key, value, low in (("image_size", image_size, 1), ("channels", channels, 1),
                                ("num_classes", num_classes, 0), ("cond_channels", cond_channels, 0),
                                ("num_params", num_params, 0), ("width", width, 2),
                                ("num_res_blocks", num_res_blocks, 1),
                                ("timesteps", timesteps, 1), ("grid_every_n_epochs", grid_every_n_epochs, 0),
                                ("grid_per_class", grid_per_class, 1)):
            check_range(f"model.{key}", value, low, integer=True)
        if not channel_mults:
            raise ConfigError("model.channel_mults=[] is not allowed; expected at least one level, e.g. [1, 2, 2]")
        for m in channel_mults:
            check_range("model.channel_mults", m, 1, integer=True)
        check_range("model.dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_range("model.p_uncond", p_uncond, 0.0, 1.0)
        check_range("model.ema_decay", ema_decay, 0.0, 1.0, high_inclusive=False)
        check_range("model.guidance_scale", guidance_scale, 0.0)
        check_choice("model.prediction", prediction, PREDICTIONS)
        get_sampler(sampler)
        check_steps(sample_steps, timesteps)
        check_image_size(image_size, channel_mults)
        if classes is not None and num_classes and len(classes) != num_classes:
            raise ConfigError(f"model.classes has {len(classes)} names but model.num_classes={num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]

        self.net = ConditionalUNet(channels, image_size, num_classes, num_params, multi_label, cond_channels,
                                   width=width, channel_mults=tuple(channel_mults), num_res_blocks=num_res_blocks,
                                   attention_resolutions=tuple(attention_resolutions), dropout=dropout)
        self.ema_net = ema_copy(self.net)  # a registered submodule, so checkpoints carry the average
        self.schedule = CosineSchedule(timesteps)
        self._train_gen: torch.Generator | None = None
        self._ema_step: int | None = None
        self._grid_inputs: dict[str, torch.Tensor] = {}  # cond/params of a training batch, reused for grids

    # ------------------------------------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        self._compiled = None
        if self.hparams.compile and self.device.type == "cuda":
            # kept outside the module tree (plain attribute) so state_dict keys stay those of self.net
            object.__setattr__(self, "_compiled", torch.compile(self.net))

    def _conditions(self, batch: dict) -> dict[str, torch.Tensor | None]:
        """cond / label / params of a batch (None where the model has no such input); clear error if one is missing."""
        hp, out = self.hparams, {}
        for key, needed, what in ((LABEL, hp.num_classes, f"model.num_classes={hp.num_classes}"),
                                  (COND, hp.cond_channels, f"model.cond_channels={hp.cond_channels}"),
                                  (PARAMS, hp.num_params, f"model.num_params={hp.num_params}")):
            if needed and batch.get(key) is None:
                raise DataError(f"the model is configured with {what} but the batch has no {key!r} entry "
                                f"(keys: {sorted(batch)})")
            out[key] = batch[key] if needed else None
        return out

    def _loss(self, net, batch: dict, t: torch.Tensor, noise: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        x0 = batch[IMAGE].float()  # (B, C, H, W) in [-1, 1]
        c = self._conditions(batch)
        xt = self.schedule.q_sample(x0, t, noise)  # schedule maths in float32 even under bf16 autocast
        out = net(xt, t, cond=c[COND], label=c[LABEL], params=c[PARAMS], drop=drop)
        return F.mse_loss(out.float(), self.schedule.target(self.hparams.prediction, x0, t, noise))

    def _generator(self) -> torch.Generator:
        # per-rank stream: seed_everything seeds every DDP rank alike, but each rank needs its own t and noise
        if self._train_gen is None or self._train_gen.device != self.device:
            seed = (torch.initial_seed() + 1_000_003 * self.global_rank) % 2**63
            self._train_gen = torch.Generator(device=self.device).manual_seed(seed)
        return self._train_gen

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch[IMAGE]
        b, g = x0.shape[0], self._generator()
        t = torch.randint(0, self.hparams.timesteps, (b,), generator=g, device=self.device)
        noise = torch.randn(x0.shape, generator=g, device=self.device)
        drop = None
        if self.net.conditional and self.hparams.p_uncond > 0:
            drop = torch.rand(b, generator=g, device=self.device) < self.hparams.p_uncond
        if not self._grid_inputs:
            self._grid_inputs = {k: batch[k][:64].detach() for k in (COND, PARAMS) if batch.get(k) is not None}
        compiled = getattr(self, "_compiled", None)
        net = compiled if compiled is not None else self.net
        loss = self._loss(net, batch, t, noise, drop)
        self.log(M.name("train", "loss"), loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b,
                 sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.trainer.global_step
        if step != self._ema_step:  # only after a real optimizer step (gradient accumulation skips some batches)
            ema_update(self.ema_net, self.net, self.hparams.ema_decay, step=step, warmup=int(self.hparams.ema_warmup))
            self._ema_step = step

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> torch.Tensor:
        """The EMA net's loss with t and noise fixed by batch_idx, so the number is comparable across epochs."""
        x0 = batch[IMAGE]
        g = torch.Generator().manual_seed(batch_idx)
        t = torch.randint(0, self.hparams.timesteps, (x0.shape[0],), generator=g).to(self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        loss = self._loss(self.ema_net, batch, t, noise, None)
        self.log(M.name(stage, "loss"), loss, prog_bar=stage == "val", on_epoch=True, batch_size=x0.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, batch_idx, "test")

    def on_train_epoch_end(self) -> None:
        every, tr = self.hparams.grid_every_n_epochs, self.trainer
        if not every or not tr.is_global_zero or tr.sanity_checking:
            return
        epoch = self.current_epoch + 1
        last = ((tr.max_epochs is not None and tr.max_epochs > 0 and epoch >= tr.max_epochs) or tr.should_stop
                or (tr.max_steps > 0 and tr.global_step >= tr.max_steps))
        if epoch % every and not last:
            return
        per = self.hparams.grid_per_class
        labels = grid_labels(max(self.hparams.num_classes, 1), per)  # (rows * per,)
        n = len(labels)
        idx = torch.arange(n)
        extra = {k: v[idx % len(v)] for k, v in self._grid_inputs.items()}
        if self.hparams.num_classes and self.hparams.multi_label:
            labels = F.one_hot(labels, self.hparams.num_classes).float()
        images = self._sample(n, torch.Generator().manual_seed(0), labels if self.hparams.num_classes else None,
                              extra.get(COND), extra.get(PARAMS), self.hparams.guidance_scale,
                              min(GRID_STEPS, self.hparams.sample_steps), self.hparams.sampler, False)
        log_sample_grid(self, images, per_row=per)

    # ------------------------------------------------------------------------------------------------ sampling
    def denoiser(self) -> Denoiser:
        """The EMA net as a :class:`Denoiser` (what every sampler calls)."""
        return Denoiser(self.ema_net, self.schedule, self.hparams.prediction)

    @torch.no_grad()
    def _sample(self, n: int, gen: torch.Generator, labels, cond, params, guidance_scale: float, steps: int,
                sampler: str, progress: bool) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1] from pure noise; inputs already checked and of length n."""
        hp = self.hparams
        was_training = self.ema_net.training
        self.ema_net.eval()
        x = draw_noise(torch.Size((n, hp.channels, hp.image_size, hp.image_size)), gen, self.schedule.sqrt_ab)
        out = get_sampler(sampler)(self.denoiser(), x, spaced_timesteps(hp.timesteps, steps),
                                   extra_args=self._extra(labels, cond, params, guidance_scale), generator=gen,
                                   progress=progress)
        self.ema_net.train(was_training)
        return out.clamp(-1, 1)

    def _extra(self, labels, cond, params, guidance_scale: float) -> dict[str, Any]:
        """The denoiser's keyword arguments, on this module's device."""
        dev = lambda v: None if v is None else v.to(self.device)
        return {"cond": dev(cond), "label": dev(labels), "params": dev(params), "guidance_scale": guidance_scale}

    def _options(self, guidance_scale: float | None, steps: int | None, sampler: str | None) -> tuple[float, int, str]:
        """Per-call sampling options, falling back to the model's configured defaults."""
        hp = self.hparams
        scale = hp.guidance_scale if guidance_scale is None else check_range("guidance_scale", guidance_scale, 0.0)
        steps = check_steps(hp.sample_steps if steps is None else steps, hp.timesteps, key="steps")
        sampler = sampler or hp.sampler
        get_sampler(sampler, key="sampler")
        return scale, steps, sampler

    def _check_inputs(self, n: int, labels, cond, params, default_labels: str):
        """labels (n,) int64 / (n, K) float / None, cond (n, Cc, H, W), params (n, P) as CPU tensors."""
        hp = self.hparams
        if labels is not None and not hp.num_classes:
            raise ConfigError("labels were given but this model has no classes (model.num_classes=0)")
        if hp.num_classes and labels is None:
            i = torch.arange(n)
            if default_labels == "balanced":  # i % num_classes: every class equally often
                labels = F.one_hot(i % hp.num_classes, hp.num_classes).float() if hp.multi_label else i % hp.num_classes
            else:  # unconditional: the null label (single-label) or no positive class (multi-label)
                labels = torch.zeros(n, hp.num_classes) if hp.multi_label else torch.full((n,), NULL_LABEL)
        if labels is not None:
            labels = labels.cpu() if torch.is_tensor(labels) else torch.as_tensor(np.asarray(labels))
            shape = (n, hp.num_classes) if hp.multi_label else (n,)
            if tuple(labels.shape) != shape:
                raise ConfigError(f"labels has shape {tuple(labels.shape)}; this model expects {shape}")
            if hp.multi_label:
                labels = labels.float()
                if not torch.isin(labels, torch.tensor([0.0, 1.0])).all():
                    raise ConfigError("labels: multi-label entries must be 0 or 1")
            else:
                labels = labels.long()
                bad = labels[(labels < NULL_LABEL) | (labels >= hp.num_classes)]
                if len(bad):
                    raise ConfigError(f"labels={bad[0].item()} is not allowed; expected a class index in "
                                      f"[0, {hp.num_classes - 1}] or {NULL_LABEL} (unconditional)")
        cond = _required("cond", cond, n, (hp.cond_channels, hp.image_size, hp.image_size), "model.cond_channels")
        params = _required("params", params, n, (hp.num_params,), "model.num_params")
        return labels, cond, params

    def generate(
        self,
        n: int,
        seed: int = 0,
        labels: Any = None,
        cond: Any = None,
        params: Any = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> ImageSet:
        """``n`` images from the EMA net as uint8 (n, H, W, C); same seed (and batch_size) -> identical images.

        labels: (n,) class indices (default i % num_classes) or (n, K) multi-hot (default one class each, in turn);
        cond: (n, cond_channels, H, W) in [-1, 1] and params: (n, num_params), required when the model has them.
        """
        check_range("n", n, 1, integer=True)
        check_range("batch_size", batch_size, 1, integer=True)
        labels, cond, params = self._check_inputs(n, labels, cond, params, "balanced")
        guidance_scale, steps, sampler = self._options(guidance_scale, steps, sampler)
        gen = torch.Generator().manual_seed(seed)
        from tqdm.auto import tqdm

        chunks = []
        for lo in tqdm(range(0, n, batch_size), desc="generating", unit="batch", disable=not progress):
            part = [None if v is None else v[lo:lo + batch_size] for v in (labels, cond, params)]
            x = self._sample(min(batch_size, n - lo), gen, *part, guidance_scale, steps, sampler, progress)
            chunks.append(to_uint8(x))
        out_labels = labels.long().numpy() if labels is not None else np.zeros(n, dtype=np.int64)
        meta = {"seed": seed, "steps": steps, "sampler": sampler, "guidance_scale": guidance_scale}
        return ImageSet(np.concatenate(chunks), out_labels, list(self.classes), source=type(self).__name__, meta=meta)

    @torch.no_grad()
    def sdedit(
        self,
        images: torch.Tensor,
        strength: float,
        labels: Any = None,
        cond: Any = None,
        params: Any = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
    ) -> torch.Tensor:
        """SDEdit (Meng et al. 2022) with the EMA net: images (B, C, H, W) in [-1, 1] -> (B, C, H, W) in [-1, 1].

        strength in [0, 1]: 0 returns the input, 1 ignores it. labels default to unconditional (null label).
        """
        hp = self.hparams
        images = torch.as_tensor(images).float()
        shape = (hp.channels, hp.image_size, hp.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise ConfigError(f"images has shape {tuple(images.shape)}; this model expects (B, {shape[0]}, "
                              f"{shape[1]}, {shape[2]}) in [-1, 1]")
        n = images.shape[0]
        labels, cond, params = self._check_inputs(n, labels, cond, params, "null")
        guidance_scale, steps, sampler = self._options(guidance_scale, steps, sampler)
        gen = torch.Generator().manual_seed(seed)
        was_training = self.ema_net.training
        self.ema_net.eval()
        out = []
        for lo in range(0, n, batch_size):
            part = [None if v is None else v[lo:lo + batch_size] for v in (labels, cond, params)]
            y = sdedit(self.denoiser(), images[lo:lo + batch_size].to(self.device), strength, steps,
                       sampler=get_sampler(sampler), extra_args=self._extra(*part, guidance_scale), generator=gen,
                       progress=progress)
            out.append(y.clamp(-1, 1) if strength > 0 else y)  # strength 0 gives the input back untouched
        self.ema_net.train(was_training)
        return torch.cat(out)


def _required(key: str, value: Any, n: int, shape: tuple[int, ...], config_key: str) -> torch.Tensor | None:
    """A per-sample input the model needs when shape[0] > 0: (n, *shape) float tensor, or a clear error."""
    if not shape[0]:
        if value is not None:
            raise ConfigError(f"{key} was given but this model takes none ({config_key}=0)")
        return None
    if value is None:
        raise ConfigError(f"this model is conditioned on {key} ({config_key}={shape[0]}); pass {key} with shape "
                          f"({n}, {', '.join(map(str, shape))})")
    value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).float().cpu()
    if value.ndim == len(shape):  # one condition for every sample
        value = value.expand(n, *shape)
    if tuple(value.shape) != (n, *shape):
        raise ConfigError(f"{key} has shape {tuple(value.shape)}; expected ({n}, {', '.join(map(str, shape))})")
    return value
