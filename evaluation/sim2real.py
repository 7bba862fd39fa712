"""Sim -> real segmentation study: Dice on real Colin27 T1 slices (AAL classes) of a U-Net trained on
(a) simulated MRI only, (b) a few real slices only, (c) both, (d) simulated plus generator-refined simulated
slices; several seeds, 95% intervals, paired effects against (b).

    python -m evaluation.sim2real --seeds 0 1 2 --steps 150 --image-size 32 --out bench/results/physics_sim2real.json

The refiner of (d) is the ``mri_sim2real_diffusion`` recipe: a conditional diffusion model that takes a simulated
slice (any protocol) as condition channel and the protocol vector as condition, trained on pairs with the *real*
MNI152 T1 template slice of the same anatomy (never on Colin27, the test subject). Refined slices keep the
simulation's labels. It is trained once per study (``--refine-steps``), and a pool of refined slices is drawn from
it before the segmenters train; the seeds vary the segmenter, not the refiner.

Real slices are split by position: ``n_real`` evenly spaced slices train setting (b)/(c); test slices are the
others at least ``gap`` slices away from every training slice (neighbouring slices of one brain look alike).
Every setting trains for the same number of steps with the same batch size.
"""

from __future__ import annotations

import argparse
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
from scarce.errors import check_choice
from scarce.io import write_json

SETTINGS = ("sim_only", "real_few", "sim_plus_real", "sim_plus_refined")


def split_real(n: int, n_real: int, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) slice indices: n_real evenly spaced, test = those >= gap slices from every training one."""
    train = np.unique(np.linspace(1, n - 2, n_real).round().astype(int))
    dist = np.abs(np.arange(n)[:, None] - train[None]).min(1)
    return train, np.flatnonzero(dist >= gap)


def train_refiner(image_size: int, n_slices: int, steps: int, batch_size: int, seed: int = 0,
                  width: int = 32) -> ConditionalDiffusion:
    """The sim -> real translator of the ``mri_sim2real_diffusion`` recipe, fitted for ``steps`` steps on CPU."""
    dm = SimulatedMRIDataModule(image_size=image_size, n_slices=n_slices, target="real", batch_size=batch_size,
                                train_batches=steps, seed=seed)
    dm.setup()
    L.seed_everything(seed, verbose=False)
    model = ConditionalDiffusion(**dm.model_kwargs(), width=width, channel_mults=(1, 2, 2), num_res_blocks=1,
                                 dropout=0.0, sample_steps=20, grid_every_n_epochs=0,
                                 optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = L.Trainer(max_steps=steps, max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return model.eval()


def refined_pool(refiner: ConditionalDiffusion, dm: SimulatedMRIDataModule, n_batches: int,
                 steps: int = 20) -> dict[str, torch.Tensor]:
    """Simulated batches of ``dm`` (its "refine" draws, disjoint from training batches by their seed) translated
    to T1 appearance by ``refiner``: {IMAGE: (N, 1, S, S) in [-1, 1], MASK: (N, S, S)} with the simulation's labels."""
    images, masks = [], []
    for i in range(n_batches):
        b = dm.batch("val", 1000 + i)  # val-stage seeds: never the segmenters' training batches
        out = refiner.generate(len(b[IMAGE]), seed=i, cond=b[IMAGE], params=b[PARAMS], steps=steps)
        images.append(torch.from_numpy(out.images).permute(0, 3, 1, 2).float() / 127.5 - 1)
        masks.append(b[MASK])
    return {IMAGE: torch.cat(images), MASK: torch.cat(masks)}


def real_batch(images: torch.Tensor, masks: torch.Tensor, g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """n slices drawn with replacement from a fixed set, with a random intensity gamma (the only augmentation)."""
    idx = torch.randint(len(images), (n,), generator=g)
    x = (images[idx] + 1) / 2
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=g) * 0.2)
    return {IMAGE: x.clamp_min(0) ** gamma * 2 - 1, MASK: masks[idx]}


def run(seeds=(0, 1, 2), steps: int = 300, batch_size: int = 16, image_size: int = 64, n_slices: int = 24,
        n_real: int = 4, gap: int = 2, lr: float = 2e-3, refine_steps: int = 600, refine_batches: int = 16,
        settings=SETTINGS) -> dict:
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
                 "batch_size": batch_size, "image_size": image_size, "pixel_mm": st.spacing_mm, "settings": {}}
    for s in settings:
        check_choice("settings", s, SETTINGS)
    dice: dict[str, list[np.ndarray]] = {s: [] for s in settings}
    t0 = time.time()
    pool = None
    if "sim_plus_refined" in settings:
        refiner = train_refiner(image_size, n_slices, refine_steps, batch_size)
        pool = refined_pool(refiner, dm, refine_batches)
        # which anatomy slice each pooled image shows: the one whose label map it carries
        idx = (pool[MASK][:, None] != st.labels[None]).flatten(2).sum(2).argmin(1)
        r = [float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
             for a, b in zip(pool[IMAGE], st.mni_t1[idx])]
        out["refiner"] = {"recipe": "mri_sim2real_diffusion", "train_steps": refine_steps, "pool": len(pool[IMAGE]),
                          "pearson_r_refined_vs_mni152_t1": mean_ci(r), "seconds": time.time() - t0}
        print(f"refiner: {refine_steps} steps, pool {len(pool[IMAGE])}, r vs MNI152 T1 "
              f"{fmt(out['refiner']['pearson_r_refined_vs_mni152_t1'])} ({time.time() - t0:.0f} s)", flush=True)
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
                elif setting == "sim_plus_refined":
                    batch = real_batch(pool[IMAGE], pool[MASK], g, batch_size)
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
    if "real_few" in settings:
        base = np.nanmean(np.stack(dice["real_few"])[:, 1:], 1)
        out["effects_vs_real_few"] = {s: paired_effect(base, np.nanmean(np.stack(dice[s])[:, 1:], 1))
                                      for s in settings if s != "real_few"}
    out["seconds"] = time.time() - t0
    return out


def table(res: dict) -> str:
    """Markdown: one row per setting, Dice per class with intervals."""
    cols = res["classes"][1:] + ["mean_brain"]
    lines = ["| trained on | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for s, per in res["settings"].items():
        lines.append(f"| {s} | " + " | ".join(fmt(per[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--n-real", type=int, default=4)
    ap.add_argument("--refine-steps", type=int, default=600, help="training steps of the sim -> real refiner")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--out", default="bench/results/physics_sim2real.json")
    a = ap.parse_args()
    res = run(tuple(a.seeds), a.steps, image_size=a.image_size, n_real=a.n_real, refine_steps=a.refine_steps,
              settings=tuple(a.settings))
    write_json(a.out, res)
    print(table(res))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
