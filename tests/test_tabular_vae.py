"""The tabular VAE LightningModule: odd batch sizes, checkpoints that load with weights_only, sampling."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.tabular import TabularDataModule
from models.base import load_generator
from models.tabular_vae import TabularVAE
from scarce.errors import ConfigError, DataError


def fit_tiny(path, tmp_path, epochs=1, **dm_kw):
    dm = TabularDataModule(path=str(path), schema={"tailnum": "identifier"}, output_dir=str(tmp_path), **dm_kw)
    model = TabularVAE(**dm.model_kwargs(), latent_dim=8, compress_dims=[32], decompress_dims=[32],
                       optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return dm, model, trainer


def write_rows(flights, tmp_path, n) -> str:
    p = tmp_path / f"rows_{n}.csv"
    flights.sample(n, random_state=3).to_csv(p, index=False)
    return str(p)


def test_fewer_rows_than_batch_size_still_trains(flights, tmp_path):
    dm, model, trainer = fit_tiny(write_rows(flights, tmp_path, 40), tmp_path, batch_size=500)
    assert len(dm.splits["train"]) < 500
    assert trainer.global_step == 1  # one (short) batch per epoch, not zero
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_last_batch_of_one_row(flights, tmp_path):
    # 720 rows -> 504 train rows with val/test 0.1/0.2; batch 503 leaves a last batch of exactly one row
    dm, model, trainer = fit_tiny(write_rows(flights, tmp_path, 720), tmp_path, batch_size=503)
    assert len(dm.splits["train"]) % 503 == 1
    assert trainer.global_step == 2
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_split_is_deterministic_disjoint_and_scarcity_nests(flights, tmp_path):
    path = write_rows(flights, tmp_path, 2000)
    a = TabularDataModule(path=path, split_seed=5)
    b = TabularDataModule(path=path, split_seed=5)
    c = TabularDataModule(path=path, split_seed=5, scarcity=0.1)
    sa, sb, sc = (m.make_splits(2000) for m in (a, b, c))
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert not set(sa["train"]) & set(sa["test"]) and not set(sa["val"]) & set(sa["test"])
    assert len(sa["train"]) + len(sa["val"]) + len(sa["test"]) == 2000
    np.testing.assert_array_equal(sc["test"], sa["test"])  # scarcity never touches the real test split
    assert set(sc["train"]) < set(sa["train"]) and len(sc["train"]) == round(0.1 * len(sa["train"]))


def test_checkpoint_rebuilds_with_weights_only_and_samples(flights, tmp_path):
    dm, model, trainer = fit_tiny(write_rows(flights, tmp_path, 1500), tmp_path, batch_size=200)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)  # nothing pickled: plain data and tensors only
    assert raw["scarce"]["class_path"] == "models.tabular_vae.TabularVAE"
    g = load_generator(str(ckpt))
    for p, q in zip(model.parameters(), g.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q)
    real_ids = dm.real_identifiers()
    a = g.generate(300, seed=7, real_identifiers=real_ids)
    b = g.generate(300, seed=7, real_identifiers=real_ids)
    pd.testing.assert_frame_equal(a, b)  # same seed, same rows
    assert list(a.columns) == list(flights.columns)
    source = set(pd.read_csv(dm.path)["tailnum"].dropna())  # every real value the generator's data holds
    assert not a["tailnum"].dropna().astype(str).isin(source).any()
    assert a["tailnum"].notna().sum() > 250
    jfk = g.generate(50, seed=1, condition={"origin": "JFK"}, real_identifiers=real_ids)
    assert len(jfk) == 50 and (jfk["origin"] == "JFK").all()
    with pytest.raises(ConfigError, match=r"condition.origin='SFO' was never seen"):
        g.generate(5, condition={"origin": "SFO"})
    with pytest.raises(DataError, match="no such file"):
        load_generator(str(tmp_path / "missing.ckpt"))


def test_rejects_bad_hyperparameters(flights, tmp_path):
    dm = TabularDataModule(path=write_rows(flights, tmp_path, 300))
    with pytest.raises(ConfigError, match=r"model.latent_dim=0"):
        TabularVAE(**dm.model_kwargs(), latent_dim=0)
    with pytest.raises(ConfigError, match=r"datamodule.scarcity=0"):
        TabularDataModule(path="x.csv", scarcity=0)


def test_all_identifier_table_is_a_clear_error(tmp_path):
    p = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"A{i:05d}" for i in range(100)], "c": 1}).to_csv(p, index=False)
    with pytest.raises(DataError, match="no modelled columns"):
        TabularVAE(**TabularDataModule(path=str(p)).model_kwargs())
