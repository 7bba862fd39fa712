"""End-to-end runs of the real configs, in-process: fast_dev_run of every experiment, and a run that must learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIG_DIR
from omegaconf import open_dict

from datamodules.table_schema import TableSchema
from evaluation.fidelity import fidelity_scores
from train import train

TASK_COLUMNS = ["month", "day", "sched_dep_time", "dep_time", "dep_delay", "sched_arr_time", "arr_delay", "carrier",
                "origin", "dest", "distance", "hour", "minute", "tailnum"]
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TABLE_EXPERIMENTS = [e for e in EXPERIMENTS if e.startswith("flights")]  # images: tests/test_image_train.py


@pytest.mark.parametrize("experiment", TABLE_EXPERIMENTS)
def test_fast_dev_run_every_experiment(train_cfg, tmp_path, experiment):
    cfg = train_cfg(f"experiment={experiment}", "++trainer.fast_dev_run=true", "generate.n=300")
    _, summary = train(cfg)
    syn = pd.read_csv(summary["synthetic"])
    assert len(syn) == 300
    report = json.loads(Path(summary["report"]).read_text())
    assert set(report) >= {"utility", "fidelity", "privacy", "quality"}
    assert report["privacy"]["identifier_leaks_total"] == 0


def uniform_baseline(real: pd.DataFrame, kinds: dict, n: int, seed: int = 0) -> pd.DataFrame:
    """Each column drawn uniformly over the real range / levels: right support, wrong shapes."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, k in kinds.items():
        v = real[c].dropna()
        if k in ("continuous", "integer"):
            out[c] = rng.uniform(v.min(), v.max(), n).round()
        elif k in ("categorical", "boolean"):
            out[c] = rng.choice(v.unique(), n)
    return pd.DataFrame(out)


@pytest.mark.slow
def test_training_learns_the_real_table(train_cfg, tmp_path, flights):
    # 2,800 real training rows, the columns of the downstream task (plus the identifier), ~1,700 steps: ~25 s
    cfg = train_cfg("experiment=flights_tvae", "trainer.max_epochs=60", "datamodule.batch_size=100",
                    f"datamodule.columns=[{','.join(TASK_COLUMNS)}]", "evaluation.seeds=[0,1,2]", logger="wandb")
    metric, summary = train(cfg)
    assert np.isfinite(metric)
    # W&B ran offline into the run folder, with its binary log
    runs = list(Path(tmp_path).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    report = json.loads(Path(summary["report"]).read_text())
    syn = pd.read_csv(summary["synthetic"])
    real_test = pd.read_csv(cfg.datamodule.path)[TASK_COLUMNS].iloc[np.load(Path(tmp_path) / "data_split.npz")["test"]]
    kinds = {c.name: c.kind for c in TableSchema.infer(real_test, {"tailnum": "identifier"}).columns.values()
             if c.kind in ("continuous", "integer", "categorical", "boolean")}
    # learned: marginals closer to real than a uniform baseline, pair trends closer than independent columns
    base = fidelity_scores(real_test, uniform_baseline(real_test, kinds, len(syn)), kinds)
    rng = np.random.default_rng(0)
    independent = syn.apply(lambda s: s.to_numpy()[rng.permutation(len(s))])
    ind = fidelity_scores(real_test, independent, kinds)
    assert report["fidelity"]["column_shapes"] > base["column_shapes"] + 0.1
    assert report["fidelity"]["column_pair_trends"] > ind["column_pair_trends"] + 0.02
    # TSTR clearly above chance for both learners, intervals included
    for learner in ("logreg", "hgb"):
        assert report["utility"][learner]["TSTR"]["auc"]["ci95"][0] > 0.65, learner
    # no real tail number in any synthetic output, and the report agrees
    real_tails = set(pd.read_csv(cfg.datamodule.path)["tailnum"].dropna())
    assert not syn["tailnum"].dropna().isin(real_tails).any()
    assert report["privacy"]["identifier_leaks_total"] == 0
    assert report["quality"]["out_of_range_values"] == 0 and report["quality"]["non_integer_values"] == 0


def test_resume_from_checkpoint(train_cfg, tmp_path):
    cfg = train_cfg("trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
                    "test=false", "generate.enabled=false")
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.ckpt_path = str(last)
    _, summary = train(cfg)
    import torch

    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6  # continued, not restarted
