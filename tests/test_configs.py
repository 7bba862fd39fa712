"""Every config group option composes and instantiates; every experiment composes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from conftest import CONFIG_DIR, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scarce import metrics
from scarce.runtime import build, build_list

GROUPS = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (GROUPS / group).glob("*.yaml"))


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(tmp_path, trainer):
    cfg = compose_cfg("train.yaml", [f"trainer={trainer}"], tmp_path)
    if trainer == "gpu":
        assert cfg.trainer.accelerator == "gpu"  # needs a GPU to instantiate; composing is checked here
        return
    assert isinstance(build(cfg.trainer, "trainer", logger=False), L.Trainer)


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options(tmp_path, logger):
    cfg = compose_cfg("train.yaml", [f"logger={logger}"], tmp_path)
    loggers = build_list(cfg.get("logger"), "logger")
    assert len(loggers) == (0 if logger == "none" else 1)


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callback_options(tmp_path, callbacks):
    cfg = compose_cfg("train.yaml", [f"callbacks={callbacks}"], tmp_path)
    cbs = build_list(cfg.get("callbacks"), "callbacks")
    assert all(isinstance(c, L.Callback) for c in cbs)
    for c in cbs:  # the checkpoint and early-stopping monitor is the metric the module logs (defined once)
        if hasattr(c, "monitor"):
            assert c.monitor == metrics.VAL_LOSS


@pytest.mark.parametrize("evaluation", options("evaluation"))
def test_evaluation_options(tmp_path, evaluation):
    cfg = compose_cfg("train.yaml", [f"evaluation={evaluation}"], tmp_path)
    assert build(cfg.evaluation, "evaluation").seeds


@pytest.mark.parametrize("datamodule", options("datamodule"))
def test_datamodule_options(tmp_path, flights_small_path, datamodule):
    cfg = compose_cfg("train.yaml", [f"datamodule={datamodule}", f"datamodule.path={flights_small_path}"], tmp_path)
    dm = build(cfg.datamodule, "datamodule")
    model = build(cfg.model, "model", **dm.model_kwargs())
    assert isinstance(dm, L.LightningDataModule) and isinstance(model, L.LightningModule)


@pytest.mark.parametrize("name", options("experiment") + [f"hparams_search/{o}" for o in options("hparams_search")]
                         + [f"debug/{o}" for o in options("debug")])
def test_experiments_and_searches_compose(tmp_path, name):
    group, _, option = name.rpartition("/")
    override = f"{group or 'experiment'}={option}"
    cfg = compose_cfg("train.yaml", [override], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.optimized_metric == metrics.VAL_LOSS


@pytest.mark.parametrize("name", ["generate.yaml", "evaluate.yaml"])
def test_other_entry_configs_resolve(tmp_path, name):
    cfg = compose_cfg(name, [], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    if name == "evaluate.yaml":
        assert instantiate(cfg.evaluation, _convert_="all").learners == ["logreg", "hgb"]
