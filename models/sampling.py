"""Noise schedule, denoiser and samplers for discrete-time diffusion (in the spirit of k-diffusion's layout).

Timesteps are integers ``t`` in [0, T); ``alpha_bar[t]`` is the signal fraction after t + 1 noising steps, and
x_t = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps.

Every sampler has ONE signature::

    sampler(denoiser, x, timesteps, *, extra_args=None, generator=None, progress=False, **opts) -> Tensor

``denoiser`` is a :class:`Denoiser`; ``x`` (B, C, H, W) is the starting point, noisy at level ``timesteps[0]``;
``timesteps`` is a decreasing 1-D int tensor of the levels to visit (the last step goes to the clean image);
``extra_args`` (dict) is passed to every denoiser call (cond, label, params, guidance_scale); ``generator`` (a CPU
``torch.Generator``) draws all the noise, so a seed fixes the result on any device. Returns x0 (B, C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from scarce.errors import ConfigError, bad_choice, check_range

PREDICTIONS = ("eps", "v")


def cosine_alpha_bar(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """(T,) float64 alpha_bar of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped at max_beta."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # (T + 1,)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # clipping avoids the singularity at t = T
    return torch.cumprod(1 - betas, dim=0)


class CosineSchedule(nn.Module):
    """The cosine schedule: float64 maths, float32 buffers that move with the module (safe under bf16-mixed)."""

    def __init__(self, timesteps: int = 1000):
        super().__init__()
        check_range("model.timesteps", timesteps, 1, integer=True)
        self.timesteps = timesteps
        ab = cosine_alpha_bar(timesteps)
        self.alpha_bar64 = ab  # CPU float64: samplers read per-step scalars from here
        # sqrt(1 - ab) is computed in float64 BEFORE the cast: 1 - ab in float32 loses digits near t = 0
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1m_ab", (1 - ab).sqrt().float(), persistent=False)

    def coeffs(self, t: torch.Tensor, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) int timesteps -> sqrt(alpha_bar), sqrt(1 - alpha_bar), each (B, 1, ..., 1) float32."""
        t = t.to(self.sqrt_ab.device).long()
        shape = (-1,) + (1,) * (ndim - 1)
        return self.sqrt_ab[t].view(shape), self.sqrt_1m_ab[t].view(shape)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: x0 (B, C, H, W), t (B,), noise like x0 -> x_t."""
        a, s = self.coeffs(t, x0.ndim)
        return a * x0 + s * noise

    def target(self, prediction: str, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the net is trained to output: eps, or v = sqrt(ab) * eps - sqrt(1 - ab) * x0 (Salimans & Ho 2022)."""
        if prediction == "eps":
            return noise
        a, s = self.coeffs(t, x0.ndim)
        return a * noise - s * x0


class Denoiser(nn.Module):
    """net + schedule + prediction type -> (x0, eps) for (x_t, t, conditions), with classifier-free guidance.

    ``net(x, t, cond=, label=, params=, drop=)`` is a :class:`models.nets.unet.ConditionalUNet` (or alike). Guidance
    (Ho & Salimans 2022): out = uncond + scale * (cond - uncond), so scale 0 is exactly the unconditional model and
    scale 1 the conditional one (one pass each); other scales run both branches in one batch. Only label and params
    are dropped in the unconditional branch; condition-image channels stay in both.
    """

    def __init__(self, net: nn.Module, schedule: CosineSchedule, prediction: str = "eps"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise bad_choice("model.prediction", prediction, PREDICTIONS)
        self.net, self.schedule, self.prediction = net, schedule, prediction

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                     label: torch.Tensor | None = None, params: torch.Tensor | None = None,
                     guidance_scale: float = 1.0) -> torch.Tensor:
        """The net's (guided) eps or v prediction, (B, C, H, W) float32."""
        b = x.shape[0]
        kw = {"cond": cond, "label": label, "params": params}
        conditional = label is not None or params is not None
        if not conditional or guidance_scale == 1.0:
            return self.net(x, t, **kw).float()
        if guidance_scale == 0.0:
            return self.net(x, t, drop=torch.ones(b, dtype=torch.bool, device=x.device), **kw).float()
        # both branches in one batch: [conditional; unconditional]
        cat = lambda v: None if v is None else torch.cat([v, v])
        drop = torch.arange(2 * b, device=x.device) >= b
        out = self.net(cat(x), cat(t), cond=cat(cond), label=cat(label), params=cat(params), drop=drop).float()
        c, u = out.chunk(2)
        return u + guidance_scale * (c - u)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, C, H, W), t (B,) or int -> predicted (x0, eps), each (B, C, H, W) float32."""
        t = torch.as_tensor(t, device=x.device).long()
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        out = self.model_output(x, t, **kwargs)
        a, s = self.schedule.coeffs(t, x.ndim)
        x = x.float()
        if self.prediction == "eps":
            return (x - s * out) / a, out
        return a * x - s * out, s * x + a * out  # v: x0 = a x - s v, eps = s x + a v


# ------------------------------------------------------------------------------------------------------ samplers
def spaced_timesteps(timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced levels from T - 1 down to 0, (steps,) int64, decreasing and distinct."""
    check_steps(steps, timesteps)
    return torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long()


def draw_noise(shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default), then moved next to ``like``."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=torch.float32)
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device)


def _bar(timesteps: torch.Tensor, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(timesteps.tolist(), desc=desc, unit="step", disable=not progress, leave=False)


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, timesteps: torch.Tensor, *,
                extra_args: dict | None = None, generator: torch.Generator | None = None, progress: bool = False,
                eta: float = 0.0, clip_x0: bool = True) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, any subsequence of timesteps; returns x0.

    eta scales the fresh noise per step: 0 is the deterministic ODE-like sampler, 1 is DDPM's ancestral sampler.
    clip_x0 clamps the predicted x0 to [-1, 1] (and re-derives eps from it) at every step.
    """
    extra_args = extra_args or {}
    ab = denoiser.schedule.alpha_bar64
    levels = timesteps.tolist()
    x = x.float()
    for i, t in enumerate(_bar(timesteps, progress, "sampling")):
        x0, eps = denoiser(x, t, **extra_args)
        a_t = float(ab[t])
        a_next = float(ab[levels[i + 1]]) if i + 1 < len(levels) else 1.0  # the last step lands on x0
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = eta * math.sqrt(max((1 - a_next) / (1 - a_t) * (1 - a_t / a_next), 0.0))
        x = math.sqrt(a_next) * x0 + math.sqrt(max(1 - a_next - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * draw_noise(x.shape, generator, x)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, timesteps: torch.Tensor, *,
                extra_args: dict | None = None, generator: torch.Generator | None = None, progress: bool = False,
                clip_x0: bool = True) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior q(x_s | x_t, x0) (Ho et al. 2020), on any timestep subsequence.

    The posterior step is DDIM with eta = 1 (Song et al. 2021, sec. 4.1), so one implementation serves both.
    """
    return sample_ddim(denoiser, x, timesteps, extra_args=extra_args, generator=generator, progress=progress,
                       eta=1.0, clip_x0=clip_x0)


Sampler = Callable[..., torch.Tensor]
SAMPLERS: dict[str, Sampler] = {"ddim": sample_ddim, "ddpm": sample_ddpm}


def get_sampler(name: str, key: str = "model.sampler") -> Sampler:
    """The sampler registered under ``name``; ConfigError listing the names otherwise."""
    if name not in SAMPLERS:
        raise bad_choice(key, name, SAMPLERS)
    return SAMPLERS[name]


@torch.no_grad()
def sdedit(denoiser: Denoiser, image: torch.Tensor, strength: float, steps: int, *,
           sampler: Sampler = sample_ddim, extra_args: dict | None = None, generator: torch.Generator | None = None,
           progress: bool = False, **opts: Any) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise ``image`` (B, C, H, W) in [-1, 1] to level strength * T, then denoise.

    ``steps`` counts sampler steps over the whole schedule, so about strength * steps of them run (at least one).
    strength 0 returns the input unchanged; strength 1 starts from pure noise, i.e. plain sampling with ``steps``.
    """
    check_range("strength", strength, 0.0, 1.0)
    if strength == 0:
        return image.clone()
    T = denoiser.schedule.timesteps
    noise = draw_noise(image.shape, generator, image)
    if strength == 1:
        return sampler(denoiser, noise, spaced_timesteps(T, steps), extra_args=extra_args, generator=generator,
                       progress=progress, **opts)
    t_start = min(max(round(strength * T) - 1, 0), T - 1)
    k = min(max(1, round(strength * steps)), t_start + 1)
    timesteps = torch.linspace(t_start, 0, k, dtype=torch.float64).round().long()
    t0 = torch.full((image.shape[0],), t_start, dtype=torch.long, device=image.device)
    x = denoiser.schedule.q_sample(image.float(), t0, noise)
    return sampler(denoiser, x, timesteps, extra_args=extra_args, generator=generator, progress=progress, **opts)


def check_steps(steps: int, timesteps: int, key: str = "model.sample_steps") -> int:
    """A sampler step count must lie in [1, T]."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ConfigError(f"{key}={steps!r} is not allowed; expected an integer in [1, {timesteps}] (model.timesteps)")
    return steps
