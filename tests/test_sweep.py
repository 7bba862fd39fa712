"""A real Optuna multirun through Hydra's sweeper, resumable from its SQLite study."""

from __future__ import annotations

import optuna
import pytest
from test_cli import run


@pytest.mark.slow
def test_optuna_sweep_two_trials_then_resume(tmp_path, flights_small_path):
    # the README's command, launched from a fresh directory, with tiny sizes
    args = ["-m", "hparams_search=flights_tvae_optuna", "hydra.sweeper.n_trials=2", "logger=none",
            f"datamodule.path={flights_small_path}", "datamodule.max_rows=1500", "trainer.max_epochs=1",
            "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "test=false"]
    run("train.py", *args, cwd=tmp_path)
    storage = f"sqlite:///{tmp_path}/logs/optuna/flights_tvae.db"
    study = optuna.load_study(study_name="flights_tvae", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    assert all(t.value > 0 for t in done) and len({t.params["model.latent_dim"] for t in done}) >= 1
    run("train.py", *args, cwd=tmp_path)  # same study name and storage: two more trials on top
    study = optuna.load_study(study_name="flights_tvae", storage=storage)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4
