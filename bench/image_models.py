"""Side-by-side benchmark of the image generators, in one run: what Lightning costs per training step, and how fast
our DDIM sampler is against denoising-diffusion-pytorch's (the reference implementation).

1. Lightning overhead per training step (the goal: at most 5 %). For each LightningModule, ``ConditionalDiffusion``
   and ``ConditionalGAN`` at the sizes of ``configs/experiment/fashion_*.yaml`` (28x28 grey, 10 classes; diffusion
   width 32, channel_mults [1, 2, 2], one res block, attention at 7x7, dropout 0.1; GAN g_width = d_width = 32),
   ``Trainer.fit`` (CPU, no logger, checkpointing, progress bar, model summary or validation; ``max_steps``) runs
   against a plain PyTorch loop over the SAME module object and the SAME ``DataLoader`` of pre-built batches:

   * diffusion: t, noise and the label-drop mask drawn from a generator, the module's own ``_loss`` (its schedule,
     its net), ``zero_grad`` / ``backward`` / ``step`` of the optimizer the module's ``configure_optimizers`` builds
     (AdamW, lr 2e-4), then ``ema_update`` with the module's decay and warm-up;
   * GAN: the module's ``_unpack`` check, one D step (fakes from G under ``no_grad``, DiffAugment through the
     module's ``_d``, hinge ``loss_d``) and one G step (``loss_g`` through ``_d``), each with the other net's
     ``requires_grad`` off as Lightning's ``toggle_optimizer`` does, both Adam optimizers from
     ``configure_optimizers``, then the module's ``_update_ema``.

   Neither side logs anything the other does not: the Lightning side pays for ``self.log`` (no logger attached), its
   loops, hooks and closures; that is the overhead measured. Steady-state ms/step is the time between the starts of
   consecutive steps (next batch fetch, hooks and the EMA update included), after the first ``WARM_STEPS`` of each
   run; whole-run ms/step also counts ``Trainer`` construction and fit start-up (or the optimizer set-up of the
   plain loop). One untimed run of each side comes first; then ``--repeats`` rounds alternate which side goes
   first, and the median of the rounds is reported with the ratio Lightning / plain.

2. DDIM sampling throughput. Our ``ConditionalDiffusion.generate(n=B, steps=S, guidance_scale=1)`` (one net pass
   per step: guidance 1 never runs the unconditional branch; clamped x0, eta 0) against the reference's
   ``GaussianDiffusion(Unet(dim, dim_mults, channels=1), image_size=28, timesteps=1000, sampling_timesteps=S,
   objective="pred_noise").sample(batch_size=B)`` (its DDIM path: clamped x0, eta 0; it also draws a noise tensor
   each step that eta 0 multiplies by zero). The reference's ``dim`` is the one whose parameter count is closest
   to ours with the same ``dim_mults`` as our ``channel_mults`` (both counts are reported, and the FLOPs per
   image per net pass from ``torch.utils.flop_counter``, since the two U-Nets spend their parameters
   differently). Both run in ``torch.inference_mode`` with the same thread count; the reference's tqdm bar is
   switched off (ours is off by default). Images/s is the median of ``--repeats`` alternating rounds after one
   warm-up call each; the ratio is ours / reference (above 1: ours is faster). Our side includes the conversion
   to uint8 and the ``ImageSet``; the reference's includes its unnormalisation to [0, 1].

Results go to ``bench/results/image_models.json`` (written atomically); a table is printed.

``--gpu`` (used by ``bench/gpu_images.sh`` on a CUDA machine) measures images/s instead: training at 64x64 RGB in
bf16-mixed with and without ``compile=True``, for both modules, and DDIM sampling at 64x64 under bf16 autocast
(ours, and the reference's when it is installed). Results to ``bench/results/image_models_gpu.json``.

Run (needs the ``bench`` extra, ``pip install -e '.[bench]'``)::

    .venv/bin/python bench/image_models.py                  # a few minutes on 2 cores
    .venv/bin/python bench/image_models.py --quick          # smoke check, writes to the temp folder
    .venv/bin/python bench/image_models.py --gpu            # on a CUDA machine (see bench/gpu_images.sh)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from datamodules.image_set import IMAGE, LABEL
from models.diffusion import ConditionalDiffusion
from models.ema import ema_update
from models.gan import ConditionalGAN

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS / "image_models.json"
DEFAULT_GPU_OUTPUT = RESULTS / "image_models_gpu.json"
NUM_CLASSES = 10
TIMESTEPS = 1000
STALL_WARNING = 0.2  # cpu stall share above which the table warns that the timings were disturbed
WARM_STEPS = 5  # steps at the start of every timed run left out of its steady-state time

# configs/experiment/fashion_diffusion.yaml and fashion_gan.yaml over configs/model/*.yaml (grids off: no sampling
# inside the timed runs)
CPU_DIFFUSION = {"image_size": 28, "channels": 1, "num_classes": NUM_CLASSES, "width": 32, "channel_mults": [1, 2, 2],
                 "num_res_blocks": 1, "attention_resolutions": [7], "dropout": 0.1, "timesteps": TIMESTEPS,
                 "p_uncond": 0.1, "ema_decay": 0.999, "grid_every_n_epochs": 0}
CPU_GAN = {"image_size": 28, "channels": 1, "num_classes": NUM_CLASSES, "g_width": 32, "d_width": 32, "z_dim": 128,
           "embed_dim": 128, "loss": "hinge", "diffaug": "color,translation,cutout", "ema_decay": 0.999,
           "grid_every_n_epochs": 0}
# 64x64 RGB on the GPU: configs/model defaults, attention at 16 as configs/experiment/medmnist_diffusion.yaml says
GPU_DIFFUSION = {**CPU_DIFFUSION, "image_size": 64, "channels": 3, "width": 64, "num_res_blocks": 2,
                 "attention_resolutions": [16]}
GPU_GAN = {**CPU_GAN, "image_size": 64, "channels": 3, "g_width": 64, "d_width": 64}
# configs/model/diffusion.yaml and gan.yaml
DIFFUSION_OPTIMIZER = functools.partial(torch.optim.AdamW, lr=2e-4, weight_decay=0.0)
GAN_OPTIMIZER = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.0, 0.99))


# ------------------------------------------------------------------------------------------------------ helpers
def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_stall_seconds() -> float | None:
    """Seconds since boot in which some runnable task waited for a CPU (Linux PSI), or None where not exposed."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]  # "some avg10=.. avg60=.. avg300=.. total=.."
        return float(dict(item.split("=") for item in first.split()[1:])["total"]) / 1e6
    except (OSError, IndexError, KeyError, ValueError):
        return None


@contextlib.contextmanager
def stall_share(sink: list[float]) -> Iterator[None]:
    """Append to ``sink`` the share of the block's wall time in which runnable work waited for a CPU."""
    stall, start = cpu_stall_seconds(), time.perf_counter()
    yield
    elapsed, end = time.perf_counter() - start, cpu_stall_seconds()
    if stall is not None and end is not None and elapsed > 0:
        sink.append(min(1.0, (end - stall) / elapsed))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    for message in (".*GPU available but not used.*", ".*no `val_dataloader`.*", ".*module\\(s\\) in eval mode.*",
                    ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=message)


def make_batches(n: int, batch_size: int, image_size: int, channels: int, seed: int,
                 device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """``n`` pre-built batches: image (B, C, S, S) uniform in [-1, 1], label (B,) int64 in [0, NUM_CLASSES)."""
    g = torch.Generator().manual_seed(seed)
    return [{IMAGE: (torch.rand(batch_size, channels, image_size, image_size, generator=g) * 2 - 1).to(device),
             LABEL: torch.randint(0, NUM_CLASSES, (batch_size,), generator=g).to(device)} for _ in range(n)]


def loader(batches: list[dict[str, torch.Tensor]]) -> DataLoader:
    """The batches as they are (batch_size=None: no collation), in order, in this process."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


# ------------------------------------------------------------------------------------------ Lightning vs plain
class StepClock(L.Callback):
    """perf_counter at the start of every training batch and at the end of training, and the thread count.

    ``sync_at``: on CUDA, synchronize before reading the clock at the start of that batch and at the end only, so
    the host keeps queueing work ahead of the GPU in between, as in a normal run.
    """

    def __init__(self, sync_at: int | None = None):
        self.starts: list[float] = []
        self.end: float | None = None
        self.threads: int | None = None
        self.sync_at = sync_at

    def on_train_start(self, trainer, pl_module) -> None:
        self.threads = torch.get_num_threads()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.sync_at is not None and len(self.starts) == self.sync_at:
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        if self.sync_at is not None:
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def steady_ms(starts: Sequence[float], warm: int) -> float:
    """Mean ms between the starts of consecutive steps, from step ``warm`` on."""
    if len(starts) < warm + 2:  # an internal error: the callers size their runs
        raise RuntimeError(f"need at least {warm + 2} steps to time, got {len(starts)}")
    return (starts[-1] - starts[warm]) / (len(starts) - 1 - warm) * 1e3


def trainer_kwargs(max_steps: int, **extra: Any) -> dict[str, Any]:
    return dict(max_steps=max_steps, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                **extra)


def lightning_run(module: L.LightningModule, dl: DataLoader, steps_per_batch: int) -> dict[str, Any]:
    """Trainer.fit over every batch of ``dl`` on the CPU; whole-run and steady-state ms/step."""
    clock = StepClock()
    if isinstance(module, ConditionalDiffusion):
        module._ema_step = None  # global_step restarts at 0 in every fit: let the EMA hook count afresh
    start = time.perf_counter()
    trainer = L.Trainer(**trainer_kwargs(len(dl) * steps_per_batch, accelerator="cpu", devices=1,
                                         callbacks=[clock]))
    trainer.fit(module, train_dataloaders=dl)
    total = time.perf_counter() - start
    if len(clock.starts) != len(dl):
        raise RuntimeError(f"Trainer.fit ran {len(clock.starts)} training steps, expected {len(dl)}")
    return {"total_ms": total * 1e3 / len(dl), "steady_ms": steady_ms(clock.starts, WARM_STEPS),
            "threads": clock.threads}


def plain_run(setup: Callable[[], Callable[[int, dict], None]], dl: DataLoader) -> dict[str, Any]:
    """The plain loop: ``setup()`` builds the optimizers and returns step(i, batch); same timing as lightning_run."""
    starts: list[float] = []
    start = time.perf_counter()
    step = setup()
    for i, batch in enumerate(dl):
        starts.append(time.perf_counter())
        step(i, batch)
    total = time.perf_counter() - start
    return {"total_ms": total * 1e3 / len(dl), "steady_ms": steady_ms(starts, WARM_STEPS),
            "threads": torch.get_num_threads()}


def diffusion_plain(module: ConditionalDiffusion, seed: int) -> Callable[[], Callable[[int, dict], None]]:
    """What ConditionalDiffusion's training step, automatic optimisation and EMA hook do, without Lightning."""
    hp = module.hparams

    def setup() -> Callable[[int, dict], None]:
        opt = module.configure_optimizers()  # the module's own factory: AdamW from config
        gen = torch.Generator().manual_seed(seed)
        module.net.train()  # (Lightning keeps each submodule's mode; the EMA copy stays in eval)

        def step(i: int, batch: dict) -> None:
            x0 = batch[IMAGE]
            b = x0.shape[0]
            t = torch.randint(0, hp.timesteps, (b,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            drop = torch.rand(b, generator=gen) < hp.p_uncond if module.net.conditional and hp.p_uncond > 0 else None
            loss = module._loss(module.net, batch, t, noise, drop)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(module.ema_net, module.net, hp.ema_decay, step=i + 1, warmup=int(hp.ema_warmup))

        return step

    return setup


def gan_plain(module: ConditionalGAN, seed: int) -> Callable[[], Callable[[int, dict], None]]:
    """What ConditionalGAN's manual-optimisation training step does (D steps, G step, EMA), without Lightning."""
    hp = module.hparams
    g_net, d_net = module.generator, module.discriminator

    def setup() -> Callable[[int, dict], None]:
        opt_g, opt_d = module.configure_optimizers()  # the module's own factories: Adam(0, 0.99) from config
        module._rng = torch.Generator().manual_seed(seed)  # what on_fit_start sets: latents and augmentation draws
        g_net.train()  # (Lightning keeps each submodule's mode; the EMA copy stays in eval)
        d_net.train()

        def step(i: int, batch: dict) -> None:
            x, label, params, cond = module._unpack(batch)
            b = len(x)
            for _ in range(hp.d_steps):
                g_net.requires_grad_(False)  # toggle_optimizer(opt_d): no grads for G's parameters
                with torch.no_grad():
                    fake = g_net(module._z(b), label, params, cond)
                d_real = module._d(d_net, x.detach(), label, params, cond)
                d_fake = module._d(d_net, fake, label, params, cond)
                d_loss = module.loss_d(d_real, d_fake)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                g_net.requires_grad_(True)
                module._d_count += 1
            d_net.requires_grad_(False)  # toggle_optimizer(opt_g): G's loss does not need D's weight gradients
            fake = g_net(module._z(b), label, params, cond)
            g_loss = module.loss_g(module._d(d_net, fake, label, params, cond))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_net.requires_grad_(True)
            module._g_count += 1
            module._update_ema()

        return step

    return setup


def time_overhead(name: str, module: L.LightningModule, trained: Sequence[torch.nn.Module], plain: Callable,
                  steps_per_batch: int, batches: list, repeats: int) -> dict[str, Any]:
    """One untimed run of each side, then ``repeats`` rounds in alternating order; medians and their ratio."""
    dl = loader(batches)
    warm = loader(batches[:WARM_STEPS + 2])
    lightning_run(module, warm, steps_per_batch)
    plain_run(plain, warm)
    rounds: dict[str, list[dict]] = {"lightning": [], "plain": []}
    stalls: dict[str, list[float]] = {"lightning": [], "plain": []}
    for r in range(repeats):
        order = ("lightning", "plain") if r % 2 == 0 else ("plain", "lightning")
        for side in order:
            with stall_share(stalls[side]):
                out = lightning_run(module, dl, steps_per_batch) if side == "lightning" else plain_run(plain, dl)
            rounds[side].append(out)
        print(f"  {name} round {r + 1}/{repeats}: Lightning {rounds['lightning'][-1]['steady_ms']:.1f} ms/step, "
              f"plain {rounds['plain'][-1]['steady_ms']:.1f} ms/step", flush=True)
    med = {side: {key: median([o[key] for o in rounds[side]]) for key in ("steady_ms", "total_ms")}
           for side in rounds}
    paired = [lt["steady_ms"] / pl["steady_ms"] for lt, pl in zip(rounds["lightning"], rounds["plain"])]
    ratio = med["lightning"]["steady_ms"] / med["plain"]["steady_ms"]
    steps = len(batches)
    return {
        "ms_per_step": {"lightning": med["lightning"]["steady_ms"], "plain": med["plain"]["steady_ms"]},
        "ratio": ratio,
        "overhead": ratio - 1,
        "paired_ratios": paired,
        "whole_run_ms_per_step": {"lightning": med["lightning"]["total_ms"], "plain": med["plain"]["total_ms"],
                                  "ratio": med["lightning"]["total_ms"] / med["plain"]["total_ms"]},
        "fixed_cost_s": {side: (med[side]["total_ms"] - med[side]["steady_ms"]) * steps / 1e3 for side in med},
        "fixed_cost_means": "whole-run time minus steps x steady ms/step: Trainer construction and fit start-up "
                            "and teardown (plain: optimizer set-up), plus whatever the first steps cost extra",
        "rounds": rounds,
        "cpu_stall_share": {side: (median(v) if v else None) for side, v in stalls.items()},
        "threads_seen": sorted({o["threads"] for side in rounds for o in rounds[side]}),
        "trained_parameters": sum(n_params(m) for m in trained),
    }


# ------------------------------------------------------------------------------------------------ DDIM sampling
def _reference():
    """denoising_diffusion_pytorch's module, with its sampling-loop progress bar switched off."""
    import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ddp
    from tqdm.auto import tqdm

    ddp.tqdm = functools.partial(tqdm, disable=True)  # the module looks tqdm up at call time
    return ddp


def matched_reference(ours: torch.nn.Module, channel_mults: Sequence[int], channels: int, image_size: int,
                      steps: int) -> tuple[Any, int]:
    """The reference GaussianDiffusion whose Unet (same dim_mults) has the parameter count closest to ``ours``."""
    ddp = _reference()
    target, mults = n_params(ours), tuple(channel_mults)
    count = lambda d: n_params(ddp.Unet(dim=d, dim_mults=mults, channels=channels))
    dim, below = 8, count(8)
    while below < target:  # the count grows with dim: walk up to the first dim at or above ours
        dim, below, previous = dim + 4, count(dim + 4), below
    if dim > 8 and target - previous < below - target:
        dim -= 4
    diffusion = ddp.GaussianDiffusion(ddp.Unet(dim=dim, dim_mults=mults, channels=channels), image_size=image_size,
                                      timesteps=TIMESTEPS, sampling_timesteps=steps, objective="pred_noise",
                                      beta_schedule="cosine")  # the schedule does not change the work
    return diffusion.eval(), dim


def flops_per_image(net: Callable[[torch.Tensor], Any], shape: tuple[int, ...]) -> float:
    """FLOPs (2 per multiply-add; convolutions, matmuls, attention) of one net pass per image of ``shape`` (C, H, W)."""
    x = torch.randn(2, *shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 2  # per image of the batch of two


def time_sampling(ours: ConditionalDiffusion, reference: Any, batch: int, steps: int, repeats: int,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                  sync: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Images/s of our generate() and the reference's sample(), one warm-up each, alternating rounds, medians."""
    labels = torch.arange(batch) % NUM_CLASSES

    def run_ours() -> None:
        ours.generate(batch, seed=0, labels=labels, steps=steps, guidance_scale=1.0, sampler="ddim", batch_size=batch)

    def run_reference() -> None:
        reference.sample(batch_size=batch)

    sides = {"ours": run_ours, "reference": run_reference}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    stalls: dict[str, list[float]] = {side: [] for side in sides}
    with torch.inference_mode(), autocast():
        for fn in sides.values():
            fn()
            sync()
        for r in range(repeats):
            for side in (("ours", "reference") if r % 2 == 0 else ("reference", "ours")):
                with stall_share(stalls[side]):
                    start = time.perf_counter()
                    sides[side]()
                    sync()
                    seconds[side].append(time.perf_counter() - start)
    ips = {side: batch / median(s) for side, s in seconds.items()}
    return {"images_per_s": ips, "ratio": ips["ours"] / ips["reference"], "seconds_per_round": seconds,
            "cpu_stall_share": {side: (median(v) if v else None) for side, v in stalls.items()}}


def sampling_benchmark(model_kw: dict, batch: int, steps: int, repeats: int, device: str = "cpu",
                       autocast=contextlib.nullcontext, sync=lambda: None) -> dict[str, Any]:
    """Our ConditionalDiffusion against the parameter-matched reference, on ``device``."""
    torch.manual_seed(0)
    ours = ConditionalDiffusion(**model_kw, sampler="ddim", sample_steps=steps).eval()
    reference, dim = matched_reference(ours.ema_net, model_kw["channel_mults"], model_kw["channels"],
                                       model_kw["image_size"], steps)
    shape = (model_kw["channels"], model_kw["image_size"], model_kw["image_size"])
    t, label = torch.full((2,), TIMESTEPS // 2), torch.zeros(2, dtype=torch.long)
    flops = {"ours": flops_per_image(lambda x: ours.ema_net(x, t, label=label), shape),  # counted on the CPU
             "reference": flops_per_image(lambda x: reference.model(x, t), shape)}
    ours, reference = ours.to(device), reference.to(device)
    timing = time_sampling(ours, reference, batch, steps, repeats, autocast, sync)
    return {
        "ours": {"net": "models.nets.unet.ConditionalUNet (EMA copy)", "parameters": n_params(ours.ema_net),
                 "width": model_kw["width"], "channel_mults": model_kw["channel_mults"],
                 "num_res_blocks": model_kw["num_res_blocks"],
                 "attention_resolutions": model_kw["attention_resolutions"],
                 "call": f"generate(n={batch}, steps={steps}, guidance_scale=1.0, sampler='ddim', "
                         f"batch_size={batch})"},
        "reference": {"net": "denoising_diffusion_pytorch.Unet", "parameters": n_params(reference.model), "dim": dim,
                      "dim_mults": list(model_kw["channel_mults"]),
                      "call": f"GaussianDiffusion(Unet(dim={dim}, dim_mults={tuple(model_kw['channel_mults'])}, "
                              f"channels={model_kw['channels']}), image_size={model_kw['image_size']}, "
                              f"timesteps={TIMESTEPS}, sampling_timesteps={steps}, objective='pred_noise', "
                              f"beta_schedule='cosine').sample(batch_size={batch})"},
        "parameter_ratio_reference_over_ours": n_params(reference.model) / n_params(ours.ema_net),
        "gflop_per_image_per_step": {side: f / 1e9 for side, f in flops.items()},
        "batch": batch, "steps": steps,
        **timing,
        # the nets' arithmetic rate while sampling: separates "less work per step" from "faster per unit of work"
        "achieved_gflop_per_s": {side: timing["images_per_s"][side] * steps * flops[side] / 1e9 for side in flops},
    }


# ------------------------------------------------------------------------------------------------------ CPU run
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=None,
                   help=f"timed training steps per run, after {WARM_STEPS} untimed ones\n"
                        f"({WARM_STEPS + 15} with compile on the GPU) "
                        "(default 20 on CPU, 40 on GPU; 3 with --quick)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default 50 on CPU as in fashion_*.yaml, 128 on GPU; 8 with --quick)")
    p.add_argument("--sample-batch", type=int, default=None,
                   help="images per DDIM sampling call (default 32 on CPU, 256 on GPU; 4 with --quick)")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (default 50; 5 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per comparison, alternating which side goes first; medians are reported\n"
                        "(default 3; 2 with --quick)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help=f"torch intra-op threads for both sides (default: all cores, {os.cpu_count()} here)")
    p.add_argument("--seed", type=int, default=0, help="batches, weights and draws (default 0)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"results JSON (default {DEFAULT_OUTPUT}, {DEFAULT_GPU_OUTPUT} with --gpu,\n"
                        "the temp folder with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke check: tiny sizes, numbers mean nothing")
    p.add_argument("--gpu", action="store_true",
                   help="CUDA images/s instead: training 64x64 RGB bf16-mixed with/without compile, DDIM sampling")
    args = p.parse_args(argv)
    defaults = {"steps": 3 if args.quick else (40 if args.gpu else 20),
                "batch_size": 8 if args.quick else (128 if args.gpu else 50),
                "sample_batch": 4 if args.quick else (256 if args.gpu else 32),
                "sample_steps": 5 if args.quick else 50,
                "repeats": 2 if args.quick else 3}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("steps", "batch_size", "sample_batch", "sample_steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} is not allowed; expected at least 1")
    if args.sample_steps > TIMESTEPS:
        p.error(f"--sample-steps={args.sample_steps} is not allowed; expected at most {TIMESTEPS} (the timesteps)")
    if args.output is None:
        if args.quick:
            args.output = Path(tempfile.gettempdir()) / f"image_models{'_gpu' if args.gpu else ''}_quick.json"
        else:
            args.output = DEFAULT_GPU_OUTPUT if args.gpu else DEFAULT_OUTPUT
    return args


def versions() -> dict[str, Any]:
    return {"ours": {"package": "scarce", "version": version("scarce"),
                     "models": ["models.diffusion.ConditionalDiffusion", "models.gan.ConditionalGAN"]},
            "reference": {"package": "denoising-diffusion-pytorch", "version": version("denoising-diffusion-pytorch")},
            "torch": torch.__version__, "lightning": version("lightning"), "python": platform.python_version()}


def machine(load_before: float) -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0]}


def run_cpu(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    overhead = {}
    for name, cls, kw, opts, plain, steps_per_batch in (
            ("diffusion", ConditionalDiffusion, CPU_DIFFUSION, {"optimizer": DIFFUSION_OPTIMIZER}, diffusion_plain, 1),
            ("gan", ConditionalGAN, CPU_GAN, {"optimizer_g": GAN_OPTIMIZER, "optimizer_d": GAN_OPTIMIZER}, gan_plain,
             2)):  # the GAN's two optimizers each advance Lightning's global_step: max_steps = 2 per training step
        torch.manual_seed(args.seed)
        module = cls(**kw, **opts)
        trained = [module.net] if name == "diffusion" else [module.generator, module.discriminator]
        # steady state: the starts of steps WARM_STEPS .. WARM_STEPS + steps bound ``steps`` timed steps
        batches = make_batches(WARM_STEPS + args.steps + 1, args.batch_size, kw["image_size"], kw["channels"],
                               args.seed)
        print(f"{name}: Trainer.fit vs plain loop, {args.steps} steps of batch {args.batch_size} ...", flush=True)
        overhead[name] = time_overhead(name, module, trained, plain(module, args.seed), steps_per_batch,
                                       batches, args.repeats)
    print(f"DDIM sampling: {args.sample_batch} images, {args.sample_steps} steps ...", flush=True)
    sampling = sampling_benchmark(CPU_DIFFUSION, args.sample_batch, args.sample_steps, args.repeats)
    result = {
        "benchmark": "image generators: Lightning overhead per training step (ours vs a plain PyTorch loop) and "
                     "DDIM sampling throughput (ours vs denoising-diffusion-pytorch)",
        "command": " ".join(["python bench/image_models.py", *(sys.argv[1:] if argv is None else argv)]),
        "compared": versions(),
        "data": {"images": "random uniform [-1, 1] tensors (content does not change the work)",
                 "image_shape": [CPU_DIFFUSION["channels"], CPU_DIFFUSION["image_size"], CPU_DIFFUSION["image_size"]],
                 "num_classes": NUM_CLASSES},
        "settings": {"quick": args.quick, "steps": args.steps, "warm_steps_left_out": WARM_STEPS,
                     "batch_size": args.batch_size, "sample_batch": args.sample_batch,
                     "sample_steps": args.sample_steps, "repeats": args.repeats, "seed": args.seed,
                     "threads": args.threads, "device": "cpu",
                     "diffusion": CPU_DIFFUSION, "gan": CPU_GAN,
                     "optimizers": {"diffusion": "AdamW(lr=2e-4, weight_decay=0)",
                                    "gan": "Adam(lr=2e-4, betas=(0, 0.99)) for G and D"}},
        "lightning_overhead": {
            **overhead,
            "ratio_means": "Lightning ms/step / plain ms/step (steady state, medians of the rounds); "
                           "overhead = ratio - 1",
            "plain_loop": "same module object, same DataLoader of pre-built batches, the module's own loss pieces "
                          "and optimizers, EMA update; no Lightning calls, no logging",
        },
        "sampling": {**sampling,
                     "ratio_means": "our images/s / reference images/s; above 1 means ours is faster",
                     "work_per_step": "one net pass per step on both sides (guidance_scale=1 skips the "
                                      "unconditional branch); the nets differ in layout (the reference has two res "
                                      "blocks per level, linear attention at every outer level and full attention "
                                      "at the innermost; ours one res block down, two up, attention only at 7x7 and "
                                      "in the middle), hence the GFLOP figures"},
        "goals": {"lightning_overhead_at_most_5pct": {name: overhead[name]["overhead"] <= 0.05 for name in overhead}},
        "machine": machine(load_before),
        "date": started.isoformat(timespec="seconds"),
        "duration_s": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
    }
    return result


def print_cpu_table(result: dict) -> None:
    def stall(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:5.0%}"

    print(f"\n{'ms per training step':26}{'Lightning':>10}{'plain':>9}{'ratio':>8}   whole run L / plain"
          "   cpu stall L / plain")
    for name in ("diffusion", "gan"):
        row = result["lightning_overhead"][name]
        whole = row["whole_run_ms_per_step"]
        print(f"{name:26}{row['ms_per_step']['lightning']:10.1f}{row['ms_per_step']['plain']:9.1f}"
              f"{row['ratio']:8.3f}   {whole['lightning']:7.1f} / {whole['plain']:<7.1f}"
              f"     {stall(row['cpu_stall_share']['lightning'])} / {stall(row['cpu_stall_share']['plain'])}")
    s = result["sampling"]
    print(f"\n{'DDIM sampling':26}{'ours':>10}{'reference':>11}{'ours/ref':>10}")
    print(f"{'images/s':26}{s['images_per_s']['ours']:10.2f}{s['images_per_s']['reference']:11.2f}{s['ratio']:10.2f}")
    print(f"{'parameters':26}{s['ours']['parameters']:10,}{s['reference']['parameters']:11,}"
          f"   (reference dim={s['reference']['dim']})")
    g, r = s["gflop_per_image_per_step"], s["achieved_gflop_per_s"]
    print(f"{'GFLOP / image / step':26}{g['ours']:10.3f}{g['reference']:11.3f}")
    print(f"{'achieved GFLOP/s':26}{r['ours']:10.1f}{r['reference']:11.1f}")
    shares = s["cpu_stall_share"]
    print(f"{'cpu stall share':26}{stall(shares['ours']):>10}{stall(shares['reference']):>11}")
    print("\ngoals:", result["goals"])
    shares = [v for row in (*(result["lightning_overhead"][n]["cpu_stall_share"] for n in ("diffusion", "gan")),
                            s["cpu_stall_share"]) for v in row.values() if v is not None]
    if shares and max(shares) > STALL_WARNING:
        print(f"WARNING: runnable work waited for a CPU during up to {max(shares):.0%} of a timing: other work on "
              "this machine disturbed the numbers (on a shared machine, --threads 1 is steadier)")


# ------------------------------------------------------------------------------------------------------ GPU run
def require_cuda() -> None:
    """A clear error (exit status 1) when there is no usable CUDA device."""
    if not torch.cuda.is_available():
        sys.exit(f"error: --gpu needs a CUDA device, but torch {torch.__version__} (CUDA build: "
                 f"{torch.version.cuda or 'none'}) sees none; run the CPU benchmark without --gpu")


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def gpu_training(name: str, cls: type, kw: dict, opts: dict, steps_per_batch: int, compile: bool, batch: int,
                 steps: int, seed: int, device: str = "cuda") -> dict[str, Any]:
    """Images/s of Trainer.fit on one device in bf16-mixed, timed from step ``warm`` on (compilation left out)."""
    torch.manual_seed(seed)
    module = cls(**kw, **opts, compile=compile)
    warm = WARM_STEPS + (15 if compile else 0)  # compilation and re-compilation land in the first steps
    batches = make_batches(warm + steps, batch, kw["image_size"], kw["channels"], seed, device=device)
    clock = StepClock(sync_at=warm if device == "cuda" else None)
    start = time.perf_counter()
    trainer = L.Trainer(**trainer_kwargs(len(batches) * steps_per_batch, accelerator="gpu" if device == "cuda"
                                         else "cpu", devices=1, precision="bf16-mixed", callbacks=[clock]))
    trainer.fit(module, train_dataloaders=loader(batches))
    wall = time.perf_counter() - start
    if len(clock.starts) != len(batches) or clock.end is None:
        raise RuntimeError(f"{name}: Trainer.fit ran {len(clock.starts)} steps, expected {len(batches)}")
    measured, n = clock.end - clock.starts[warm], len(batches) - warm
    out = {"images_per_s": n * batch / measured, "ms_per_step": measured / n * 1e3, "batch": batch,
           "timed_steps": n, "warm_steps": warm, "compile": compile, "wall_s_with_warmup": wall,
           "trained_parameters": n_params(module.net) if name == "diffusion"
           else n_params(module.generator) + n_params(module.discriminator)}
    if device == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    print(f"  {name:9} compile={compile!s:5}  {out['images_per_s']:9.0f} images/s  "
          f"({out['ms_per_step']:.1f} ms/step, batch {batch}; {wall:.0f} s with warm-up)", flush=True)
    return out


def run_gpu(args: argparse.Namespace, argv: Sequence[str] | None, device: str = "cuda") -> dict[str, Any]:
    """Training and sampling images/s on ``device`` (always CUDA from the command line)."""
    if device == "cuda":
        require_cuda()
        torch.set_float32_matmul_precision("high")
    started = dt.datetime.now(dt.timezone.utc)
    training: dict[str, Any] = {}
    errors: list[str] = []  # a failed configuration is recorded and the rest still run; main() then exits 1
    for name, cls, kw, opts, steps_per_batch in (
            ("diffusion", ConditionalDiffusion, GPU_DIFFUSION, {"optimizer": DIFFUSION_OPTIMIZER}, 1),
            ("gan", ConditionalGAN, GPU_GAN, {"optimizer_g": GAN_OPTIMIZER, "optimizer_d": GAN_OPTIMIZER}, 2)):
        training[name] = {}
        for compile in (False, True):
            key = "compiled" if compile else "eager"
            try:
                training[name][key] = gpu_training(name, cls, kw, opts, steps_per_batch, compile, args.batch_size,
                                                   args.steps, args.seed, device)
            except Exception as e:  # noqa: BLE001 - reported in the JSON and by the exit status
                traceback.print_exc()
                errors.append(f"training {name} compile={compile}: {type(e).__name__}: {e}")
                training[name][key] = {"error": errors[-1]}
        if all("images_per_s" in training[name][k] for k in ("eager", "compiled")):
            training[name]["compile_speedup"] = (training[name]["compiled"]["images_per_s"]
                                                 / training[name]["eager"]["images_per_s"])
    autocast = functools.partial(torch.autocast, device, dtype=torch.bfloat16)
    try:
        try:
            _reference()
        except ImportError as e:  # the reference is an optional extra; ours is still timed
            print(f"WARNING: denoising-diffusion-pytorch is not importable ({e}); timing our sampler only",
                  flush=True)
            sampling = ours_sampling_only(args, autocast, device)
        else:
            sampling = sampling_benchmark(GPU_DIFFUSION, args.sample_batch, args.sample_steps, args.repeats, device,
                                          autocast, _sync(device))
            sampling["ratio_means"] = "our images/s / reference images/s; above 1 means ours is faster"
            print(f"  DDIM {args.sample_steps} steps, batch {args.sample_batch}, bf16 autocast: ours "
                  f"{sampling['images_per_s']['ours']:.0f} images/s, reference "
                  f"{sampling['images_per_s']['reference']:.0f} images/s (ours/ref {sampling['ratio']:.2f}; "
                  f"parameters {sampling['ours']['parameters']:,} vs {sampling['reference']['parameters']:,})",
                  flush=True)
    except Exception as e:  # noqa: BLE001 - reported in the JSON and by the exit status
        traceback.print_exc()
        errors.append(f"sampling: {type(e).__name__}: {e}")
        sampling = {"error": errors[-1]}
    info: dict[str, Any] = {"type": device}
    if device == "cuda":
        info.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return {
        "benchmark": "image generators on one GPU: training images/s (bf16-mixed, eager and torch.compile) and "
                     "DDIM sampling images/s (bf16 autocast), ours and denoising-diffusion-pytorch's",
        "command": " ".join(["python bench/image_models.py", *(sys.argv[1:] if argv is None else argv)]),
        "compared": versions(),
        "device": info,
        "settings": {"quick": args.quick, "steps": args.steps, "batch_size": args.batch_size,
                     "sample_batch": args.sample_batch, "sample_steps": args.sample_steps, "repeats": args.repeats,
                     "seed": args.seed, "precision": "bf16-mixed (training), bf16 autocast (sampling)",
                     "float32_matmul_precision": torch.get_float32_matmul_precision(),
                     "diffusion": GPU_DIFFUSION, "gan": GPU_GAN},
        "training": {**training, "images_per_s_means": "real images through training steps per second; a GAN step "
                                                       "is one D step and one G step on that batch"},
        "sampling": sampling,
        "errors": errors,
        "date": started.isoformat(timespec="seconds"),
        "duration_s": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
    }


def ours_sampling_only(args: argparse.Namespace, autocast, device: str) -> dict[str, Any]:
    """Our DDIM images/s alone (when the reference is not installed): one warm-up call, median of the rounds."""
    ours = ConditionalDiffusion(**GPU_DIFFUSION, sampler="ddim").to(device).eval()
    seconds, sync = [], _sync(device)
    with torch.inference_mode(), autocast():
        for r in range(args.repeats + 1):
            start = time.perf_counter()
            ours.generate(args.sample_batch, steps=args.sample_steps, guidance_scale=1.0, batch_size=args.sample_batch)
            sync()
            if r:
                seconds.append(time.perf_counter() - start)
    ips = args.sample_batch / median(seconds)
    print(f"  DDIM {args.sample_steps} steps, batch {args.sample_batch}, bf16 autocast: ours {ips:.0f} images/s",
          flush=True)
    return {"images_per_s": {"ours": ips}, "reference": "not installed", "parameters": n_params(ours.ema_net),
            "batch": args.sample_batch, "steps": args.sample_steps}


# --------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict:
    from scarce.io import write_json

    args = parse_args(argv)
    quiet_lightning()
    if args.gpu:
        result = run_gpu(args, argv)
    else:
        result = run_cpu(args, argv)
        print_cpu_table(result)
    write_json(args.output, result)
    print(f"\nwrote {args.output}")
    if result.get("errors"):
        sys.exit("error: " + "; ".join(result["errors"]))
    return result


if __name__ == "__main__":
    main()
