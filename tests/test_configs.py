"""Every config group option composes and instantiates; every experiment composes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
from conftest import CONFIG_DIR, compose_cfg
from image_files import RNG, nifti, png_folder, write_dicom, write_npz
from hydra.utils import instantiate
from omegaconf import OmegaConf

from scarce import metrics
from scarce.runtime import build, build_list

GROUPS = Path(CONFIG_DIR)
FASHION = "/usr/share/datasets/fashion-mnist"
HEDGEWARS, ASTERISK = "/usr/share/games/hedgewars/Data/Sounds/voices", "/usr/share/asterisk/sounds"
SPEECH_DATAMODULES = ("asterisk_digits", "hedgewars", "speech_folder")


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


def datamodule_overrides(datamodule: str, tmp_path: Path, flights_path: Path) -> list[str]:
    """Each datamodule pointed at a small real or test-written file in its own format."""
    if datamodule in ("flights", "table"):
        return [f"datamodule.path={flights_path}"]
    if datamodule == "medmnist":
        return [f"datamodule.source.path={write_npz(tmp_path / 'tiny.npz', shape=(8, 8))}"]
    if datamodule == "image_folder":
        return [f"datamodule.source.root={png_folder(tmp_path / 'png', n_per_class=(8, 8))}", "datamodule.image_size=8"]
    if datamodule == "nifti":
        for c in range(2):
            for v in range(3):
                nifti(tmp_path / "nii" / f"c{c}" / f"v{v}.nii.gz", RNG.random((8, 8, 10)).astype(np.float32) + 0.1)
        return [f"datamodule.source.root={tmp_path / 'nii'}", "datamodule.image_size=8"]
    if datamodule == "dicom":
        for c in range(2):
            for i in range(6):
                write_dicom(tmp_path / "dcm" / f"c{c}" / f"{i}.dcm", RNG.integers(0, 4000, (8, 8)))
        return [f"datamodule.source.root={tmp_path / 'dcm'}", "datamodule.image_size=8"]
    if datamodule == "speech_folder":
        import soundfile as sf

        t = np.arange(4000) / 16000
        for spk in ("a", "b", "c", "d", "e"):
            for lab, f in (("yes", 300.0), ("no", 500.0)):
                (tmp_path / "voices" / spk).mkdir(parents=True, exist_ok=True)
                sf.write(str(tmp_path / "voices" / spk / f"{lab}.wav"), 0.5 * np.sin(2 * np.pi * f * t), 16000)
        return [f"datamodule.source.root={tmp_path / 'voices'}"]
    for name, folder in (("hedgewars", HEDGEWARS), ("asterisk_digits", ASTERISK)):
        if datamodule == name and not Path(folder).is_dir():
            pytest.skip(f"{folder} not installed (make data)")
    if datamodule == "fashion_mnist" and not Path(FASHION).is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION} (make data)")
    return []


@pytest.mark.parametrize("datamodule", options("datamodule"))
def test_datamodule_options(tmp_path, flights_small_path, datamodule):
    overrides = [f"datamodule={datamodule}", *datamodule_overrides(datamodule, tmp_path, flights_small_path)]
    if datamodule in SPEECH_DATAMODULES:  # speech data with the learned speech augmenter
        overrides += ["model=speech_cvae"]
    elif datamodule not in ("flights", "table"):  # an image datamodule with an image generator, 8x8 -> 4x4
        overrides += ["model=diffusion", "model.channel_mults=[1,2]"]
    cfg = compose_cfg("train.yaml", overrides, tmp_path)
    dm = build(cfg.datamodule, "datamodule")
    model = build(cfg.model, "model", **dm.model_kwargs())
    assert isinstance(dm, L.LightningDataModule) and isinstance(model, L.LightningModule)
    assert dm.train_size() > 0


@pytest.mark.parametrize("name", options("experiment") + [f"hparams_search/{o}" for o in options("hparams_search")]
                         + [f"debug/{o}" for o in options("debug")])
def test_experiments_and_searches_compose(tmp_path, name):
    group, _, option = name.rpartition("/")
    override = f"{group or 'experiment'}={option}"
    cfg = compose_cfg("train.yaml", [override], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if cfg.trainer.get("limit_val_batches") == 0:  # no validation split (too few speakers): the training loss
        assert cfg.optimized_metric == metrics.name("train", "loss")
    else:
        assert cfg.optimized_metric == metrics.VAL_LOSS


@pytest.mark.parametrize("name", ["generate.yaml", "evaluate.yaml"])
def test_other_entry_configs_resolve(tmp_path, name):
    cfg = compose_cfg(name, [], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    if name == "evaluate.yaml":
        assert instantiate(cfg.evaluation, _convert_="all").learners == ["logreg", "hgb"]
