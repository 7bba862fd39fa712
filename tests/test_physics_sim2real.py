"""Sim -> real study pieces: SDEdit of simulated slices with a prior trained on the real MNI152 T1 keeps the
anatomy (and the labels it carries), and merging a run into an earlier result checks that seeds and data match."""

from __future__ import annotations

import copy

import pytest
import torch

from datamodules.image_set import IMAGE
from datamodules.simulated import MASK, SimulatedMRIDataModule
from evaluation.sim2real import (
    SOURCE,
    anatomy_index,
    effects,
    merge,
    pearson,
    pool_sources,
    sdedit_pool,
    train_prior,
)
from scarce.errors import ConfigError


@pytest.fixture(scope="module")
def prior_and_sources():
    dm = SimulatedMRIDataModule(image_size=32, n_slices=12, batch_size=12, atlas_root=None, seed=0)
    dm.setup()
    torch.set_num_threads(1)
    prior = train_prior(dm.stack.mni_t1, steps=20, batch_size=8, width=8)
    return dm, prior, pool_sources(dm, 1)


def test_sdedit_of_simulated_slices_keeps_their_anatomy(prior_and_sources):
    dm, prior, sources = prior_and_sources
    assert prior.hparams.num_classes == prior.hparams.cond_channels == prior.hparams.num_params == 0
    x = sources[0][IMAGE]
    zero = sdedit_pool(prior, sources, 0.0)
    assert torch.equal(zero[IMAGE], x) and torch.equal(zero[MASK], sources[0][MASK])  # strength 0: the input
    low = sdedit_pool(prior, sources, 0.2)
    assert low[IMAGE].shape == x.shape and low[IMAGE].abs().max() <= 1
    assert not torch.equal(low[IMAGE], x)
    assert torch.equal(low[MASK], sources[0][MASK]) and torch.equal(low[SOURCE], x)  # labels carried over
    idx = anatomy_index(low[MASK], dm.labels())
    own = pearson(low[IMAGE], x)
    for i in range(len(x)):  # each output is closer to its own input than to any input of a distant slice
        far = [j for j in range(len(x)) if abs(int(idx[j]) - int(idx[i])) >= 3]
        assert far, "the batch should hold slices of distant anatomy"
        assert own[i] > max(pearson(low[IMAGE][i:i + 1].expand(len(far), -1, -1, -1), x[far]))
    # more noise, less of the input: strength 1 is plain sampling and forgets the slice
    full = sdedit_pool(prior, sources, 1.0)
    assert sum(pearson(full[IMAGE], x)) < sum(own) - 0.5 * len(x)


def _result(dice_real_few, dice_other, steps=150, seeds=(0, 1, 2)):
    def stat(values):
        return {"mean": sum(values) / len(values), "ci95": [0, 1], "n": len(values), "values": list(values)}
    per = lambda v: {"cortex": stat(v), "mean_brain": stat(v)}
    return effects({"classes": ["background", "cortex"], "train_slices": [1], "test_slices": [3], "steps": steps,
                    "batch_size": 16, "image_size": 32, "pixel_mm": 5.75, "seeds": list(seeds), "seconds": 1.0,
                    "settings": {"real_few": per(dice_real_few), "sim_only": per(dice_other)}})


def test_merge_adds_settings_and_pairs_them_with_the_stored_baseline():
    old = _result([0.5, 0.6, 0.7], [0.6, 0.6, 0.8])
    new = _result([0.5, 0.6, 0.7], [0.0, 0.0, 0.0])
    new["settings"]["sim_plus_sdedit"] = new["settings"].pop("sim_only")
    out = merge(copy.deepcopy(old), new)
    assert list(out["settings"]) == ["real_few", "sim_only", "sim_plus_sdedit"]
    assert out["merged"]["reproduced"] == ["real_few"] and out["merged"]["added"] == ["sim_plus_sdedit"]
    assert out["effects_vs_real_few"]["sim_only"]["mean"] == pytest.approx(0.2 / 3)
    assert out["effects_vs_real_few"]["sim_plus_sdedit"]["values"] == pytest.approx([-0.5, -0.6, -0.7])


def test_merge_refuses_runs_that_do_not_match():
    old = _result([0.5, 0.6, 0.7], [0.6, 0.6, 0.8])
    with pytest.raises(ConfigError, match="steps=100 in this run but 150"):
        merge(old, _result([0.5, 0.6, 0.7], [0.1, 0.1, 0.1], steps=100))
    with pytest.raises(ConfigError, match="real_few class cortex.*seeds or data differ"):
        merge(old, _result([0.5, 0.6, 0.71], [0.1, 0.1, 0.1]))
    with pytest.raises(ConfigError, match="seeds="):
        merge(old, _result([0.5, 0.6, 0.7], [0.1, 0.1, 0.1], seeds=(3, 4, 5)))
