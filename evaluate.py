"""Train-on-synthetic / test-on-real evaluation of a synthetic dataset, plus fidelity, privacy and quality.

    python evaluate.py run_dir=logs/flights_tvae/runs/<time>   # the run's data, split, protocol and synthetic data
    python evaluate.py synthetic=path/to/synthetic.parquet datamodule.max_rows=50000
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from scarce import pipeline
from scarce.errors import DataError
from scarce.loggers import close_loggers
from scarce.runtime import build, build_list, run_cli

log = logging.getLogger("scarce.evaluate")


def run_configs(cfg: DictConfig) -> tuple[DictConfig, DictConfig, str | None]:
    """(datamodule, evaluation, synthetic data path) of ``run_dir`` when given, else this config's.

    With ``run_dir`` the run's own datamodule (and saved split) and evaluation protocol are used; ``evaluation.*``
    overrides on this command line are applied on top, so a re-evaluation repeats the run's protocol unless asked.
    """
    if not cfg.get("run_dir"):
        return cfg.datamodule, cfg.evaluation, cfg.get("synthetic")
    run = Path(cfg.run_dir)
    if not run.is_dir():
        raise DataError(f"run_dir={str(run)!r}: no such folder")
    resolved = run / "config.resolved.yaml"
    if not resolved.is_file():
        raise DataError(f"run_dir={str(run)!r} has no config.resolved.yaml; is it a folder written by train.py?")
    saved = OmegaConf.load(resolved)
    dm = saved.datamodule
    split = run / "data_split.npz"
    if split.is_file():
        dm.split_file = str(split)
    dm.output_dir = None
    evaluation = saved.get("evaluation") or cfg.evaluation
    for override in HydraConfig.get().overrides.task if HydraConfig.initialized() else []:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("evaluation."):
            OmegaConf.update(evaluation, key[len("evaluation."):], yaml.safe_load(value), force_add=True)
    # the run wrote its synthetic data under its own folder; look there by name, so a moved run folder still works
    written = saved.get("generate", {}).get("output") or "synthetic.csv"
    return dm, evaluation, cfg.get("synthetic") or str(run / Path(written).name)


def evaluate(cfg: DictConfig) -> dict:
    dm_cfg, eval_cfg, synthetic = run_configs(cfg)
    if not synthetic:
        raise DataError("give synthetic=path/to/data (a table, an .npz or a PNG folder) or run_dir=path/to/train/run")
    if not Path(synthetic).exists():
        raise DataError(f"synthetic={synthetic!r}: no such file or folder")
    out_dir = Path(cfg.paths.output_dir)  # this command's own folder: a training run's report is never overwritten
    evaluator = build(eval_cfg, "evaluation")
    datamodule = build(dm_cfg, "datamodule")
    loggers = build_list(cfg.get("logger"), "logger")
    try:
        summary = {"run_dir": str(out_dir), "synthetic": synthetic}
        summary.update(pipeline.evaluate_synthetic(evaluator, datamodule, synthetic, out_dir, loggers))
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
