"""The command lines as a user runs them: real subprocesses, real files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT

from scarce.errors import ScarceError
from scarce.runtime import run_cli

ENV = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


def run(script: str, *args: str, ok: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_generate_evaluate_commands(tmp_path, flights_small_path):
    run_dir = tmp_path / "run"
    p = run("train.py", "experiment=flights_tvae", "debug=default", f"datamodule.path={flights_small_path}",
            "datamodule.max_rows=null", "logger=wandb", f"hydra.run.dir={run_dir}")
    for line in ("run folder", "checkpoint", "synthetic data", "W&B run", "real only (TRTR)"):
        assert line in p.stdout, line
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert (run_dir / "report.json").is_file() and (run_dir / "data_split.npz").is_file()

    # generate: conditional sample to Parquet, with a manifest that names the checkpoint by hash
    out = tmp_path / "gen" / "jfk.parquet"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run("generate.py", f"ckpt_path={ckpt}", "n=120", "seed=3", "condition={origin: JFK}", f"output={out}",
        f"hydra.run.dir={tmp_path / 'gen'}")
    df = pd.read_parquet(out)
    assert len(df) == 120 and set(df["origin"]) == {"JFK"}
    manifest = json.loads((tmp_path / "gen" / "jfk.manifest.json").read_text())
    assert manifest["rows"] == 120 and manifest["seed"] == 3 and len(manifest["checkpoint_sha256"]) == 64
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0]
    assert not df["tailnum"].dropna().isin(set(pd.read_csv(flights_small_path)["tailnum"].dropna())).any()

    # evaluate the run again from its folder: its data, split and protocol, so the same numbers; the run's own
    # report stays untouched and the new one goes to the evaluate command's folder
    before = (run_dir / "report.json").read_text()
    run("evaluate.py", f"run_dir={run_dir}", "logger=csv", f"hydra.run.dir={tmp_path / 'eval'}")
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    original = json.loads(before)
    assert (run_dir / "report.json").read_text() == before
    assert again["meta"]["seeds"] == original["meta"]["seeds"] == [0, 1]  # debug=default's protocol, not the default
    assert again["utility"] == original["utility"]
    assert again["meta"]["rows"]["real_test"] == len(np.load(run_dir / "data_split.npz")["test"])


@pytest.mark.parametrize("args, message", [
    (["datamodule.path=/nope/flights.csv"], "error: datamodule.path='/nope/flights.csv': no such file"),
    (["datamodule.scarcity=2"], "error: datamodule.scarcity=2 is not allowed; expected a number in (0.0, 1.0]"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    p = run("train.py", "logger=none", f"hydra.run.dir={tmp_path}", *args, ok=False)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("overrides, message", [
    (["datamodule.columns=[carrier,nope]"], "datamodule.columns: unknown column 'nope'"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not allowed; expected an integer"),
    (["model.compress_dims=[64,0]"], "model.compress_dims=0 is not allowed"),
    (["+datamodule.schema.flight=ids"], "datamodule.schema.flight='ids' is not allowed; expected one of"),
    (["evaluation.learners=[svm]"], "evaluation.learners='svm' is not allowed"),
])
def test_bad_config_values_in_process(train_cfg, capsys, overrides, message):
    from train import train

    cfg = train_cfg("trainer.max_epochs=1", *overrides)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_own_table_with_schema_override(tmp_path):
    """The README's "your own table" path: a made-up trips table, the `table` datamodule, a schema override."""
    from conftest import compose_cfg
    from train import train

    rng = np.random.default_rng(0)
    n = 600
    distance = rng.gamma(2.0, 2.0, n)
    trips = pd.DataFrame({
        "trip_id": [f"T{i:06d}" for i in rng.permutation(n)],
        "zone": rng.choice(["north", "south", "east", None], n),
        "distance": distance.round(2),
        "fare": (2.5 + 2.0 * distance + rng.normal(0, 1, n)).round(2),
        "pickup_time": pd.date_range("2024-03-01", periods=n, freq="17min").strftime("%Y-%m-%d %H:%M:%S"),
    })
    path = tmp_path / "trips.csv"
    trips.to_csv(path, index=False)
    cfg = compose_cfg("train.yaml", [
        "datamodule=table", f"datamodule.path={path}", "datamodule.schema={trip_id: identifier, zone: categorical}",
        "evaluation.task.name=big_fare", "evaluation.task.target={column: fare, op: '>', value: 10}",
        "evaluation.task.features=[distance, zone]", "evaluation.seeds=[0,1]", "trainer.max_epochs=2", "logger=none",
    ], tmp_path / "run")
    _, summary = train(cfg)
    syn = pd.read_csv(summary["synthetic"])
    assert list(syn.columns) == list(trips.columns)
    assert not syn["trip_id"].isin(set(trips["trip_id"])).any()
    assert syn["trip_id"].str.fullmatch(r"T\d{6}").all() and syn["trip_id"].is_unique
    assert pd.to_datetime(syn["pickup_time"], format="%Y-%m-%d %H:%M:%S").notna().all()  # a datetime, not an id
    assert json.loads(Path(summary["report"]).read_text())["meta"]["task"] == "big_fare"


def test_generate_errors_before_writing(tmp_path):
    out = tmp_path / "x.csv"
    p = run("generate.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"output={out}", f"hydra.run.dir={tmp_path}",
            ok=False)
    assert p.returncode == 2 and "no such file" in p.stderr.splitlines()[-1]
    assert not out.exists()


def test_release_mode_needs_key_and_masks(tmp_path, flights_small_path):
    from conftest import compose_cfg

    from generate import generate

    cfg = compose_cfg("generate.yaml", ["mode=release", f"release.input={flights_small_path}",
                                        f"release.output={tmp_path / 'masked.csv'}"], tmp_path)
    os.environ.pop("SCARCE_RELEASE_KEY", None)
    with pytest.raises(ScarceError, match="SCARCE_RELEASE_KEY"):
        generate(cfg)
    os.environ["SCARCE_RELEASE_KEY"] = "not-in-any-output"
    try:
        generate(cfg)
    finally:
        os.environ.pop("SCARCE_RELEASE_KEY")
    real, masked = pd.read_csv(flights_small_path), pd.read_csv(tmp_path / "masked.csv")
    pd.testing.assert_frame_equal(real.drop(columns="tailnum"), masked.drop(columns="tailnum"))
    assert not masked["tailnum"].dropna().isin(set(real["tailnum"].dropna())).mean() > 0.01
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"not-in-any-output" not in f.read_bytes(), f


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path, flights_small_path):
    """Lightning's DDP with 2 CPU processes (gloo): both ranks train, one writes the synthetic data and report."""
    run_dir = tmp_path / "ddp"
    p = run("train.py", "debug=default", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.sync_batchnorm=false", f"datamodule.path={flights_small_path}", "datamodule.max_rows=null",
            "logger=csv", f"hydra.run.dir={run_dir}")
    assert "Starting with 2 processes" in p.stdout + p.stderr
    assert (p.stdout + p.stderr).count("Outputs:") == 1  # rank 0 only
    report = json.loads((run_dir / "report.json").read_text())
    assert report["privacy"]["identifier_leaks_total"] == 0
    assert len(pd.read_csv(run_dir / "synthetic.csv")) == 500
