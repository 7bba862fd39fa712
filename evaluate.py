"""Train-on-synthetic / test-on-real evaluation of a synthetic table, plus fidelity, privacy and quality.

    python evaluate.py run_dir=logs/flights_tvae/runs/<time>              # the run's split and synthetic.csv
    python evaluate.py synthetic=path/to/synthetic.parquet datamodule.max_rows=50000
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from scarce import pipeline
from scarce.errors import DataError
from scarce.loggers import close_loggers
from scarce.runtime import build, build_list, run_cli

log = logging.getLogger("scarce.evaluate")


def datamodule_config(cfg: DictConfig) -> DictConfig:
    """The datamodule of ``run_dir`` (its resolved config and saved split) or the one in this config."""
    if not cfg.get("run_dir"):
        return cfg.datamodule
    run = Path(cfg.run_dir)
    resolved = run / "config.resolved.yaml"
    if not resolved.is_file():
        raise DataError(f"run_dir={str(run)!r} has no config.resolved.yaml; is it a folder written by train.py?")
    dm = OmegaConf.load(resolved).datamodule
    split = run / "data_split.npz"
    if split.is_file():
        dm.split_file = str(split)
    dm.output_dir = None
    return dm


def evaluate(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else None
    synthetic = cfg.get("synthetic") or (str(run_dir / "synthetic.csv") if run_dir else None)
    if not synthetic:
        raise DataError("give synthetic=path/to/table.csv or run_dir=path/to/train/run")
    if not Path(synthetic).is_file():
        raise DataError(f"synthetic={synthetic!r}: no such file")
    out_dir = run_dir if run_dir else Path(cfg.paths.output_dir)
    datamodule = build(datamodule_config(cfg), "datamodule")
    loggers = build_list(cfg.get("logger"), "logger")
    try:
        summary = {"run_dir": str(out_dir), "synthetic": synthetic}
        summary.update(pipeline.evaluate_tables(cfg.evaluation, datamodule, synthetic, out_dir, loggers))
        summary["wandb"] = pipeline.wandb_location(loggers)
        pipeline.print_summary(summary)
        return summary
    finally:
        close_loggers(loggers)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate.yaml")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    main()
