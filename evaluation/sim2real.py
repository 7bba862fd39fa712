"""Sim -> real segmentation study: Dice on real Colin27 T1 slices (AAL classes) of a U-Net trained on
(a) simulated MRI only, (b) a few real slices only, (c) both, (d) simulated plus generator-refined simulated
slices, (e) simulated plus SDEdit-ed simulated slices; several seeds, 95% intervals, paired effects against (b).

    python -m evaluation.sim2real --seeds 0 1 2 --steps 150 --image-size 32 --out bench/results/physics_sim2real.json
    # one setting more, merged into an earlier result (same seeds, steps and slices). real_few and sim_only are
    # rerun and must reproduce the stored per-seed Dice: real_few checks seeds and real data, sim_only the simulator
    # (a changed simulator changes every simulated batch; real_few alone would not notice):
    python -m evaluation.sim2real --seeds 0 1 2 --steps 150 --image-size 32 \
        --settings real_few sim_only sim_plus_sdedit \
        --merge bench/results/physics_sim2real.json --out bench/results/physics_sim2real.json

The refiner of (d) is the ``mri_sim2real_diffusion`` recipe: a conditional diffusion model that takes a simulated
slice (any protocol) as condition channel and the protocol vector as condition, trained on pairs with the *real*
MNI152 T1 template slice of the same anatomy (never on Colin27, the test subject). Refined slices keep the
simulation's labels. It is trained once per study (``--refine-steps``), and a pool of refined slices is drawn from
it before the segmenters train; the seeds vary the segmenter, not the refiner.

The SDEdit prior of (e) is an unconditional diffusion model (no label, no condition channel, no protocol) trained
on the real MNI152 T1 slices alone, with the refiner's size and steps. Simulated slices are noised to
``--sdedit-strength`` of the schedule and denoised by it (Meng et al. 2022), so coarse anatomy stays and the
appearance moves towards real T1; labels are carried over. A small scan over strengths (r of the output against
its input and against the MNI152 T1 slice of the same anatomy) is written with the results.

Real slices are split by position: ``n_real`` evenly spaced slices train setting (b)/(c); test slices are the
others at least ``gap`` slices away from every training slice (neighbouring slices of one brain look alike).
Every setting trains for the same number of steps with the same batch size.
"""

from __future__ import annotations

import argparse
import json
import time

from functools import partial

import lightning as L
import numpy as np
import torch

from datamodules.image_set import IMAGE, PARAMS
from datamodules.simulated import MASK, SimulatedMRIDataModule
from evaluation.segmentation import confusion, dice_from_confusion
from evaluation.stats import fmt, mean_ci, paired_effect
from models.diffusion import ConditionalDiffusion
from models.segmentation import Segmenter
from scarce.errors import ConfigError, check_choice, check_range
from scarce.io import write_json

SETTINGS = ("sim_only", "real_few", "sim_plus_real", "sim_plus_refined", "sim_plus_sdedit")
POOLED = ("sim_plus_refined", "sim_plus_sdedit")  # settings that alternate simulated batches with a generated pool
SOURCE = "source"  # pool key: the simulated slices an SDEdit pool was made from
SCAN_STRENGTHS = (0.2, 0.3, 0.4, 0.5, 0.6)


def split_real(n: int, n_real: int, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) slice indices: n_real evenly spaced, test = those >= gap slices from every training one."""
    train = np.unique(np.linspace(1, n - 2, n_real).round().astype(int))
    dist = np.abs(np.arange(n)[:, None] - train[None]).min(1)
    return train, np.flatnonzero(dist >= gap)


def _fit(model: ConditionalDiffusion, steps: int, **data) -> ConditionalDiffusion:
    """``steps`` CPU training steps of a diffusion model (data: datamodule= or train_dataloaders=); in eval mode."""
    trainer = L.Trainer(max_steps=steps, max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, **data)
    return model.eval()


def _small_diffusion(width: int, **sizes) -> ConditionalDiffusion:
    """The study's diffusion net (refiner and SDEdit prior alike): 3 levels, 1 block each, AdamW 1e-3, 20 DDIM steps."""
    return ConditionalDiffusion(**sizes, width=width, channel_mults=(1, 2, 2), num_res_blocks=1, dropout=0.0,
                                sample_steps=20, grid_every_n_epochs=0, optimizer=partial(torch.optim.AdamW, lr=1e-3))


def train_refiner(image_size: int, n_slices: int, steps: int, batch_size: int, seed: int = 0,
                  width: int = 32) -> ConditionalDiffusion:
    """The sim -> real translator of the ``mri_sim2real_diffusion`` recipe, fitted for ``steps`` steps on CPU."""
    dm = SimulatedMRIDataModule(image_size=image_size, n_slices=n_slices, target="real", batch_size=batch_size,
                                train_batches=steps, seed=seed)
    dm.setup()
    L.seed_everything(seed, verbose=False)
    return _fit(_small_diffusion(width, **dm.model_kwargs()), steps, datamodule=dm)


class RealSlices(torch.utils.data.Dataset):
    """steps * batch_size draws (with replacement, fixed by seed) from real slices (N, 1, S, S) in [-1, 1]."""

    def __init__(self, images: torch.Tensor, length: int, seed: int):
        self.images = images
        self.idx = torch.randint(len(images), (length,), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {IMAGE: self.images[self.idx[i]]}


def train_prior(real_t1: torch.Tensor, steps: int, batch_size: int, seed: int = 0,
                width: int = 32) -> ConditionalDiffusion:
    """An unconditional diffusion model of real T1 slices ``real_t1`` (N, S, S) in [0, 1] (no label, condition
    channel or protocol), the SDEdit prior; same net, optimiser and steps as the refiner."""
    check_range("len(real_t1)", len(real_t1), 1, integer=True)
    x = (real_t1.float() * 2 - 1)[:, None]
    L.seed_everything(seed, verbose=False)
    loader = torch.utils.data.DataLoader(RealSlices(x, steps * batch_size, seed), batch_size=batch_size)
    model = _small_diffusion(width, image_size=x.shape[-1], channels=1)
    return _fit(model, steps, train_dataloaders=loader)


def pool_sources(dm: SimulatedMRIDataModule, n_batches: int) -> list[dict[str, torch.Tensor]]:
    """The simulated batches every generated pool starts from: val-stage seeds, never the segmenters' batches."""
    return [dm.batch("val", 1000 + i) for i in range(n_batches)]


def refined_pool(refiner: ConditionalDiffusion, sources: list[dict[str, torch.Tensor]],
                 steps: int = 20) -> dict[str, torch.Tensor]:
    """Simulated batches translated to T1 appearance by ``refiner``: {IMAGE: (N, 1, S, S) in [-1, 1],
    MASK: (N, S, S)} with the simulation's labels."""
    images = []
    for i, b in enumerate(sources):
        out = refiner.generate(len(b[IMAGE]), seed=i, cond=b[IMAGE], params=b[PARAMS], steps=steps)
        images.append(torch.from_numpy(out.images).permute(0, 3, 1, 2).float() / 127.5 - 1)
    return {IMAGE: torch.cat(images), MASK: torch.cat([b[MASK] for b in sources])}


def sdedit_pool(prior: ConditionalDiffusion, sources: list[dict[str, torch.Tensor]], strength: float,
                steps: int = 20) -> dict[str, torch.Tensor]:
    """Simulated batches SDEdit-ed at ``strength`` by the real-image ``prior``: {IMAGE: (N, 1, S, S) in [-1, 1],
    MASK: (N, S, S)} with the simulation's labels, SOURCE: the simulated inputs."""
    images = [prior.sdedit(b[IMAGE], strength, steps=steps, seed=i) for i, b in enumerate(sources)]
    return {IMAGE: torch.cat(images), MASK: torch.cat([b[MASK] for b in sources]),
            SOURCE: torch.cat([b[IMAGE] for b in sources])}


def pearson(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-image Pearson r of (N, ...) against (N, ...)."""
    return [float(torch.corrcoef(torch.stack([x.flatten().float(), y.flatten().float()]))[0, 1]) for x, y in zip(a, b)]


def anatomy_index(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) which slice of ``labels`` (M, S, S) each label map of ``masks`` (N, S, S) is: the one it matches best."""
    return (masks[:, None] != labels[None]).flatten(2).sum(2).argmin(1)


def strength_scan(prior: ConditionalDiffusion, sources: list[dict[str, torch.Tensor]], mni_t1: torch.Tensor,
                  labels: torch.Tensor, strengths=SCAN_STRENGTHS, steps: int = 20) -> dict[str, dict]:
    """Per strength: r of the SDEdit output against its simulated input and against the MNI152 T1 slice of the
    same anatomy (how much of the input is kept vs how real-T1-like it becomes)."""
    out = {}
    for s in strengths:
        p = sdedit_pool(prior, sources, s, steps)
        idx = anatomy_index(p[MASK], labels)
        out[str(s)] = {"r_vs_input": mean_ci(pearson(p[IMAGE], p[SOURCE])),
                       "r_vs_mni152_t1": mean_ci(pearson(p[IMAGE][:, 0], mni_t1[idx]))}
    return out


def real_batch(images: torch.Tensor, masks: torch.Tensor, g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """n slices drawn with replacement from a fixed set, with a random intensity gamma (the only augmentation)."""
    idx = torch.randint(len(images), (n,), generator=g)
    x = (images[idx] + 1) / 2
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=g) * 0.2)
    return {IMAGE: x.clamp_min(0) ** gamma * 2 - 1, MASK: masks[idx]}


def run(seeds=(0, 1, 2), steps: int = 300, batch_size: int = 16, image_size: int = 64, n_slices: int = 24,
        n_real: int = 4, gap: int = 2, lr: float = 2e-3, refine_steps: int = 600, refine_batches: int = 16,
        settings=SETTINGS, sdedit_strength: float = 0.4, scan_batches: int = 2) -> dict:
    """The study; returns the results as data (per setting, per class: Dice mean, interval, per-seed values)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dm = SimulatedMRIDataModule(image_size=image_size, n_slices=n_slices, test_on_real=True, task="segment",
                                batch_size=batch_size, train_batches=steps, seed=0)
    dm.setup()
    st = dm.stack
    real_x, real_y = (st.colin_t1 * 2 - 1)[:, None], st.labels
    tr, te = split_real(n_slices, n_real, gap)
    classes = dm.classes
    out: dict = {"classes": classes, "train_slices": tr.tolist(), "test_slices": te.tolist(), "steps": steps,
                 "batch_size": batch_size, "image_size": image_size, "pixel_mm": st.spacing_mm,
                 "seeds": list(seeds), "settings": {}}
    for s in settings:
        check_choice("settings", s, SETTINGS)
    check_range("sdedit_strength", sdedit_strength, 0.0, 1.0)
    dice: dict[str, list[np.ndarray]] = {s: [] for s in settings}
    t0 = time.time()
    pools: dict[str, dict[str, torch.Tensor]] = {}
    sources = pool_sources(dm, refine_batches) if any(s in POOLED for s in settings) else []
    if "sim_plus_refined" in settings:
        refiner = train_refiner(image_size, n_slices, refine_steps, batch_size)
        pool = pools["sim_plus_refined"] = refined_pool(refiner, sources)
        r = pearson(pool[IMAGE][:, 0], st.mni_t1[anatomy_index(pool[MASK], st.labels)])
        out["refiner"] = {"recipe": "mri_sim2real_diffusion", "train_steps": refine_steps, "pool": len(pool[IMAGE]),
                          "pearson_r_refined_vs_mni152_t1": mean_ci(r), "seconds": time.time() - t0}
        print(f"refiner: {refine_steps} steps, pool {len(pool[IMAGE])}, r vs MNI152 T1 "
              f"{fmt(out['refiner']['pearson_r_refined_vs_mni152_t1'])} ({time.time() - t0:.0f} s)", flush=True)
    if "sim_plus_sdedit" in settings:
        t1 = time.time()
        prior = train_prior(st.mni_t1, refine_steps, batch_size)
        scan = strength_scan(prior, sources[:scan_batches], st.mni_t1, st.labels)
        pool = pools["sim_plus_sdedit"] = sdedit_pool(prior, sources, sdedit_strength)
        idx = anatomy_index(pool[MASK], st.labels)
        out["sdedit"] = {"prior": "unconditional diffusion on the real MNI152 T1 slices", "train_steps": refine_steps,
                         "strength": sdedit_strength, "pool": len(pool[IMAGE]),
                         "pearson_r_sdedit_vs_mni152_t1": mean_ci(pearson(pool[IMAGE][:, 0], st.mni_t1[idx])),
                         "pearson_r_sdedit_vs_input": mean_ci(pearson(pool[IMAGE], pool[SOURCE])),
                         "pearson_r_input_vs_mni152_t1": mean_ci(pearson(pool[SOURCE][:, 0], st.mni_t1[idx])),
                         "strength_scan": scan, "seconds": time.time() - t1}
        sd = out["sdedit"]
        print(f"sdedit prior: {refine_steps} steps, strength {sdedit_strength}, pool {len(pool[IMAGE])}, r vs MNI152 "
              f"T1 {fmt(sd['pearson_r_sdedit_vs_mni152_t1'])} (input {fmt(sd['pearson_r_input_vs_mni152_t1'])}), "
              f"r vs input {fmt(sd['pearson_r_sdedit_vs_input'])} ({time.time() - t0:.0f} s)", flush=True)
    for seed in seeds:
        for setting in settings:
            torch.manual_seed(seed)
            model = Segmenter(1, len(classes), classes)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
            g = torch.Generator().manual_seed(seed)
            dm.seed = seed
            for step in range(steps):
                if setting == "sim_only" or (setting != "real_few" and step % 2 == 0):
                    batch = dm.batch("train", step)
                elif setting in POOLED:
                    batch = real_batch(pools[setting][IMAGE], pools[setting][MASK], g, batch_size)
                else:
                    batch = real_batch(real_x[tr], real_y[tr], g, batch_size)
                loss, _ = model._loss(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
            pred = model.predict_masks(real_x[te])
            dice[setting].append(dice_from_confusion(confusion(pred, real_y[te], len(classes))).numpy())
            print(f"seed {seed} {setting}: dice {np.round(dice[setting][-1], 3).tolist()} ({time.time() - t0:.0f} s)",
                  flush=True)
    for setting in settings:
        d = np.stack(dice[setting])  # (seeds, K)
        per = {c: mean_ci(d[:, k].tolist(), bounds=(0, 1)) for k, c in enumerate(classes)}
        per["mean_brain"] = mean_ci(np.nanmean(d[:, 1:], 1).tolist(), bounds=(0, 1))
        out["settings"][setting] = per
    out["seconds"] = time.time() - t0
    return effects(out)


def effects(res: dict) -> dict:
    """Adds the paired effect on mean brain Dice of every setting against real_few (seed by seed), when run."""
    per = res["settings"]
    if "real_few" in per:
        base = per["real_few"]["mean_brain"]["values"]
        res["effects_vs_real_few"] = {s: paired_effect(base, v["mean_brain"]["values"])
                                      for s, v in per.items() if s != "real_few"}
    return res


MATCH_KEYS = ("classes", "train_slices", "test_slices", "steps", "batch_size", "image_size", "pixel_mm")


def merge(old: dict, new: dict, tol: float = 1e-6) -> dict:
    """``old`` results with ``new``'s settings added or replaced. The runs must share slices, steps and sizes,
    and every setting in both must give the same per-seed Dice (within ``tol``): the check that seeds and data
    match, so paired effects across the two runs are paired. Rerun sim_only as well as real_few: only a setting
    that draws simulated batches notices a change in the simulator."""
    for k in MATCH_KEYS:
        if old.get(k) != new.get(k):
            raise ConfigError(f"--merge: {k}={new.get(k)!r} in this run but {old.get(k)!r} in the merged file; "
                              "rerun with the arguments of that file")
    if "seeds" in old and old["seeds"] != new["seeds"]:
        raise ConfigError(f"--merge: seeds={new['seeds']} in this run but {old['seeds']} in the merged file")
    shared = [s for s in new["settings"] if s in old["settings"]]
    for s in shared:
        for c, stat in new["settings"][s].items():
            a, b = np.asarray(old["settings"][s][c]["values"]), np.asarray(stat["values"])
            if a.shape != b.shape or not np.allclose(a, b, atol=tol, rtol=0, equal_nan=True):
                raise ConfigError(f"--merge: setting {s} class {c} gives Dice {b.round(4).tolist()} here but "
                                  f"{a.round(4).tolist()} in the merged file: seeds or data differ")
    out = {**old, **{k: v for k, v in new.items() if k not in ("settings", "seconds")}}
    out["settings"] = {**old["settings"], **new["settings"]}
    out["merged"] = {"reproduced": shared, "added": [s for s in new["settings"] if s not in shared],
                     "seconds_of_added_run": new["seconds"]}
    return effects(out)


def table(res: dict) -> str:
    """Markdown: one row per setting, Dice per class with intervals."""
    cols = res["classes"][1:] + ["mean_brain"]
    lines = ["| trained on | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for s, per in res["settings"].items():
        lines.append(f"| {s} | " + " | ".join(fmt(per[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--n-real", type=int, default=4)
    ap.add_argument("--refine-steps", type=int, default=600, help="training steps of the sim -> real refiner")
    ap.add_argument("--sdedit-strength", type=float, default=0.4, help="noise level SDEdit starts from, in [0, 1]")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--merge", default=None, help="an earlier results JSON to add this run's settings to")
    ap.add_argument("--out", default="bench/results/physics_sim2real.json")
    a = ap.parse_args()
    old = None
    if a.merge:
        with open(a.merge) as f:
            old = json.load(f)
    res = run(tuple(a.seeds), a.steps, image_size=a.image_size, n_real=a.n_real, refine_steps=a.refine_steps,
              settings=tuple(a.settings), sdedit_strength=a.sdedit_strength)
    if old is not None:
        try:
            res = merge(old, res)
        except ConfigError:
            write_json(a.out + ".unmerged.json", res)  # the run is kept for a look at what differs
            raise
    write_json(a.out, res)
    print(table(res))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
