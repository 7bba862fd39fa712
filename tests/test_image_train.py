"""End-to-end image runs of the real configs, in-process: fast_dev_run of every image experiment, and a run on a
two-class subset of real digits whose samples must teach a classifier to recognise real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIG_DIR, compose_cfg
from sklearn.datasets import load_digits

from datamodules.image_readers import NpzSource
from scarce.errors import ConfigError
from train import train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
# physics experiments (simulated data, no synthetic set written) run in tests/test_simulated.py, speech ones in
# tests/test_speech_augmenter.py
IMAGE_EXPERIMENTS = [e for e in EXPERIMENTS if not e.startswith(("flights", "mri_", "xray_", "hedgewars_", "asterisk_"))]
FASHION = Path("/usr/share/datasets/fashion-mnist")
QUICK_EVAL = ["evaluation.seeds=[0,1]", "evaluation.classifier.steps=20", "evaluation.kid_subsets=5"]


def digits_npz(path: Path, classes: tuple[int, ...], size: int = 8) -> Path:
    """Real sklearn digits of the given classes as a MedMNIST-format file (80/10/10 split by position)."""
    d = load_digits()
    keep = np.isin(d.target, classes)
    x = (d.images[keep] * 255 / 16).round().astype(np.uint8)
    if size != 8:
        x = np.kron(x, np.ones((size // 8, size // 8), np.uint8))[:, :size, :size]
        x = np.pad(x, ((0, 0), (0, size - x.shape[1]), (0, size - x.shape[2])))
    y = np.searchsorted(classes, d.target[keep])[:, None]
    n = len(x)
    cut = [0, int(n * 0.8), int(n * 0.9), n]
    arrays = {}
    for i, split in enumerate(("train", "val", "test")):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x[cut[i]:cut[i + 1]], y[cut[i]:cut[i + 1]]
    np.savez(path, classes=np.array([str(c) for c in classes]), **arrays)
    return path


@pytest.mark.parametrize("experiment", IMAGE_EXPERIMENTS)
def test_fast_dev_run_every_image_experiment(tmp_path, experiment):
    overrides = [f"experiment={experiment}", "++trainer.fast_dev_run=true", "logger=csv", "generate.n=40",
                 *QUICK_EVAL]
    if experiment.startswith("fashion") and not FASHION.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION} (make data)")
    if experiment.startswith("medmnist"):  # the user brings the file: here real digits at 28x28, three classes
        overrides += [f"datamodule.source.path={digits_npz(tmp_path / 'digits28.npz', (0, 1, 2), size=28)}",
                      "model.width=16", "model.num_res_blocks=1"]
    cfg = compose_cfg("train.yaml", overrides, tmp_path)
    _, summary = train(cfg)
    syn = NpzSource(summary["synthetic"]).read()  # written in the format our own reader takes back
    assert len(syn) == 40 and syn.images.dtype == np.uint8
    assert np.bincount(syn.labels).max() - np.bincount(syn.labels).min() <= 1  # balanced over classes
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["images"] == 40 and manifest["classes"] == syn.classes
    report = json.loads(Path(summary["report"]).read_text())
    assert set(report) >= {"meta", "utility", "fidelity", "privacy", "quality"}
    assert np.isfinite(report["fidelity"]["fid"])
    assert list(tmp_path.glob("synthetic_grid*.png")), "the synthetic sample grid was not written"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["diffusion", "gan"])
def test_samples_teach_a_classifier_real_digits(tmp_path, model):
    """Two real digit classes (0 vs 1, ~290 training images): a classifier trained only on samples must recognise
    real test digits well above chance, so the generator learned the class-conditional images."""
    path = digits_npz(tmp_path / "digits01.npz", (0, 1))
    epochs = {"diffusion": 40, "gan": 60}[model]
    cfg = compose_cfg("train.yaml", [
        f"experiment=digits_{model}", "datamodule=medmnist", f"datamodule.source.path={path}", "datamodule.channels=1",
        f"trainer.max_epochs={epochs}", "logger=csv", "generate.n=300", "evaluation.seeds=[0,1,2]",
        "evaluation.classifier.steps=150", "test=false", "model.grid_every_n_epochs=1000"], tmp_path)
    _, summary = train(cfg)
    report = json.loads(Path(summary["report"]).read_text())
    tstr = report["utility"]["TSTR"]["accuracy"]
    assert tstr["ci95"][0] > 0.8, tstr  # chance is 0.5
    assert report["quality"]["nonfinite_values"] == 0 and report["quality"]["classes_missing_in_synthetic"] == []


def test_generate_and_evaluate_an_image_run(tmp_path):
    """train.py -> generate.py (class subset, PNG folder) -> evaluate.py (the run's protocol, and a PNG folder)."""
    import evaluate as evaluate_entry
    import generate as generate_entry
    from scarce.errors import ConfigError

    run_dir = tmp_path / "run"
    cfg = compose_cfg("train.yaml", ["experiment=digits_diffusion", "trainer.max_epochs=1",
                                     "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
                                     "logger=csv", "generate.n=30", "test=false", *QUICK_EVAL], run_dir)
    _, summary = train(cfg)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    out = tmp_path / "gen" / "threes_and_sevens"
    gen_cfg = compose_cfg("generate.yaml", [f"ckpt_path={ckpt}", "n=12", "labels=[3,'7']", f"output={out}",
                                            "steps=5"], tmp_path / "gen")
    generate_entry.generate(gen_cfg)
    listed = (out / "labels.csv").read_text().splitlines()[1:]
    assert len(listed) == 12 and {line.split(",")[1] for line in listed} == {"3", "7"}
    assert len(list(out.glob("*/*.png"))) == 12
    manifest = json.loads((out.parent / "threes_and_sevens.manifest.json").read_text())
    assert manifest["class_counts"]["3"] == 6 and manifest["labels"] == ["3", "7"]
    for overrides, message in ((["labels=[eleven]"], "labels: 'eleven' is not a class of this model"),
                               ([f"output={tmp_path / 'x.csv'}"], "images are written to a .npz file or a PNG folder")):
        bad = compose_cfg("generate.yaml", [f"ckpt_path={ckpt}", "n=4", *overrides], tmp_path / "bad")
        with pytest.raises(ConfigError, match=message):
            generate_entry.generate(bad)

    # the run again from its folder: same data, split, protocol and synthetic file -> the same utility numbers
    again = evaluate_entry.evaluate(compose_cfg("evaluate.yaml", [f"run_dir={run_dir}", "logger=csv"],
                                                tmp_path / "eval"))
    first, second = (json.loads(Path(p).read_text())["utility"] for p in (summary["report"], again["report"]))
    assert first["TSTR"]["accuracy"] == second["TSTR"]["accuracy"]
    assert first["TRTR"]["accuracy"] == second["TRTR"]["accuracy"]
    # a PNG folder is evaluated the same way (its class folders map back to the run's classes)
    png = evaluate_entry.evaluate(compose_cfg("evaluate.yaml", [f"run_dir={run_dir}", "logger=csv",
                                                                f"synthetic={out}"], tmp_path / "eval_png"))
    assert json.loads(Path(png["report"]).read_text())["meta"]["rows"]["synthetic"] == 12


def test_no_validation_before_max_epochs_names_the_setting(tmp_path):
    # a recipe that validates every 10 epochs, cut to 1 epoch: the checkpoint metric never appears
    cfg = compose_cfg("train.yaml", ["experiment=digits_diffusion", "trainer.max_epochs=1", "logger=csv",
                                     "++trainer.check_val_every_n_epoch=10", "++trainer.limit_train_batches=2",
                                     "generate.enabled=false"], tmp_path)
    with pytest.raises(ConfigError, match=r"check_val_every_n_epoch=10 epochs and trainer.max_epochs=1 is fewer"):
        train(cfg)
