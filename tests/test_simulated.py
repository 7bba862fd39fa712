"""Simulated datamodules: seeded, device-generated batches with the image batch keys; every physics experiment
in fast_dev_run through the real Hydra config; a short real run must learn (sim -> real Dice above a floor)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, compose_cfg

from datamodules.image_set import COND, IMAGE, PARAMS
from datamodules.simulated import MASK, SimulatedMRIDataModule, SimulatedXRayDataModule, batch_seed
from physics.phantoms import INVESALIUS, MRICRON
from scarce.errors import ConfigError
from scarce.runtime import build
from train import train

PHYSICS_EXPERIMENTS = ("mri_sim_segmentation", "mri_sim2real_diffusion", "xray_drr_gan")
HAS_ATLAS = (MRICRON / "aal.nii.gz").is_file()
HAS_CT = INVESALIUS.is_file()


def test_every_physics_experiment_is_listed():
    on_disk = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")
               if p.stem.startswith(("mri_", "xray_"))}
    assert on_disk == set(PHYSICS_EXPERIMENTS)


def test_mri_batches_are_seeded_endless_and_shaped():
    dm = SimulatedMRIDataModule(image_size=32, n_slices=6, batch_size=4, atlas_root=None, seed=3)
    a, b = dm.batch("train", 0), dm.batch("train", 0)
    assert all(torch.equal(a[k], b[k]) for k in a)  # fixed seed -> same batch
    assert not torch.equal(a[IMAGE], dm.batch("train", 0, epoch=1)[IMAGE])  # new data every epoch
    assert not torch.equal(a[IMAGE], dm.batch("train", 0, rank=1)[IMAGE])  # DDP ranks differ
    assert torch.equal(dm.batch("val", 0, epoch=0)[IMAGE], dm.batch("val", 0, epoch=0)[IMAGE])
    assert a[IMAGE].shape == (4, 1, 32, 32) and a[IMAGE].min() >= -1 and a[IMAGE].max() <= 1
    assert a[PARAMS].shape == (4, 10) and a[MASK].shape == (4, 32, 32) and a[MASK].dtype == torch.int64
    assert dm.classes == ["background", "csf", "gm", "wm"]  # no atlas: dominant-tissue labels
    # the one-hot sequence in PARAMS matches the contrast: CSF is dark in spin-echo T1w/GRE, mask 1 is CSF
    assert len({batch_seed(0, s, 0, 0, 0) for s in ("train", "val", "test")}) == 3


def test_real_target_pairs_simulation_with_the_real_t1():
    dm = SimulatedMRIDataModule(image_size=32, n_slices=6, batch_size=4, atlas_root=None, target="real",
                                sequences=["gradient_echo"], snr=[200.0, 200.0], acceleration=[1.0, 1.0],
                                motion_mm=[0.0, 0.0], motion_deg=[0.0, 0.0], bias=[0.0, 0.0])
    b = dm.batch("train", 0)
    assert b[COND].shape == b[IMAGE].shape == (4, 1, 32, 32)
    # a T1-weighted simulation of the same anatomy correlates with the real template slice
    for sim, real in zip(b[COND], b[IMAGE]):
        r = torch.corrcoef(torch.stack([sim.flatten(), real.flatten()]))[0, 1]
        assert r > 0.8


@pytest.mark.skipif(not HAS_CT, reason=f"invesalius-examples not installed ({INVESALIUS})")
def test_xray_batches_and_footprints():
    dm = SimulatedXRayDataModule(image_size=16, ct_factor=8, n_samples=32, batch_size=3, seed=1)
    a, b = dm.batch("train", 2), dm.batch("train", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a[IMAGE].shape == a[COND].shape == (3, 1, 16, 16) and a[PARAMS].shape == (3, 6)
    assert (a[MASK] == 1).any() and (a[MASK] == 0).any()  # the skull's footprint and open field
    # more bone along the ray -> more attenuation: image brighter where the footprint is
    assert a[IMAGE][:, 0][a[MASK] == 1].mean() > a[IMAGE][:, 0][a[MASK] == 0].mean()


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match="datamodule.target='sim' is not allowed"):
        SimulatedMRIDataModule(target="sim")
    with pytest.raises(ConfigError, match=r"datamodule.snr=\[40.0, 10.0\]"):
        SimulatedMRIDataModule(snr=[40.0, 10.0])
    with pytest.raises(ConfigError, match="datamodule.sequences='fse' is not allowed"):
        SimulatedMRIDataModule(sequences=["fse"])
    dm = SimulatedMRIDataModule(atlas_root="/nonexistent", test_on_real=True, n_slices=2, image_size=16)
    with pytest.raises(ConfigError, match="test_on_real=true needs the Colin27"):
        dm.setup()


@pytest.mark.parametrize("experiment", PHYSICS_EXPERIMENTS)
def test_fast_dev_run_every_physics_experiment(tmp_path, experiment):
    if experiment.startswith("xray") and not HAS_CT:
        pytest.skip(f"invesalius-examples not installed ({INVESALIUS})")
    if experiment == "mri_sim_segmentation" and not HAS_ATLAS:
        pytest.skip(f"mricron-data not installed ({MRICRON})")
    overrides = [f"experiment={experiment}", "++trainer.fast_dev_run=true", "logger=csv", "datamodule.batch_size=4",
                 "datamodule.image_size=32"]
    if experiment.startswith("mri"):
        overrides.append("datamodule.n_slices=8")
    else:
        overrides += ["datamodule.ct_factor=8", "datamodule.n_samples=32"]
    cfg = compose_cfg("train.yaml", overrides, tmp_path)
    metric, summary = train(cfg)
    assert summary["run_dir"] == str(tmp_path)


@pytest.mark.skipif(not HAS_ATLAS, reason=f"mricron-data not installed ({MRICRON})")
def test_simulation_trained_segmenter_beats_chance_on_real_colin27(tmp_path):
    """A short run of the real experiment: trained on simulated MRI only, its Dice on real Colin27 slices must be
    well above what predicting the commonest class would give (0 for every brain class)."""
    cfg = compose_cfg("train.yaml", ["experiment=mri_sim_segmentation", "logger=csv", "trainer.max_epochs=2",
                                     "datamodule.train_batches=30", "datamodule.image_size=32",
                                     "datamodule.n_slices=12", "datamodule.batch_size=12", "callbacks=none"],
                      tmp_path)
    L.seed_everything(0)
    train(cfg)
    import csv
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    dice = float(next(r["test/dice_cortex"] for r in rows if r.get("test/dice_cortex")))
    assert dice > 0.5
