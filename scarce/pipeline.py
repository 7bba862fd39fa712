"""The steps after training that train.py, generate.py and evaluate.py share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from scarce.generation import write_dataset
from scarce.io import read_table
from scarce.loggers import log_table, run_location

if TYPE_CHECKING:
    from evaluation.tabular import TabularEvaluation

log = logging.getLogger("scarce")
SAMPLE_TABLE_ROWS = 100


def log_config(cfg: DictConfig, loggers: Sequence[Logger]) -> None:
    """The whole resolved config as hyperparameters (what W&B shows as the run's config)."""
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("hydra", None)
    for lg in loggers:
        lg.log_hyperparams(params)


def best_checkpoint(trainer) -> str | None:
    cb = getattr(trainer, "checkpoint_callback", None)
    if cb is None or trainer.fast_dev_run:
        return None
    return cb.best_model_path or cb.last_model_path or None


def generate_after_training(cfg: DictConfig, model, datamodule, ckpt: str | None,
                            loggers: Sequence[Logger]) -> dict[str, Any]:
    """Sample from the best checkpoint (or the in-memory model), write it with a manifest, log a sample table."""
    from models.base import load_generator

    gen_cfg = cfg.generate
    generator = load_generator(ckpt) if ckpt else model.cpu().eval()
    n = gen_cfg.get("n") or len(datamodule.splits["train"])
    log.info("generating %d rows from %s", n, ckpt or "the in-memory model")
    df = generator.generate(int(n), seed=int(gen_cfg.get("seed") or 0), real_identifiers=datamodule.real_identifiers(),
                            progress=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    path, manifest = write_dataset(df, gen_cfg.output, config=config, checkpoint=ckpt, seed=gen_cfg.get("seed"))
    log_table(loggers, "synthetic/sample", df.head(SAMPLE_TABLE_ROWS))
    return {"synthetic": str(path), "manifest": str(manifest)}


def evaluate_tables(evaluator: TabularEvaluation, datamodule, synthetic: str | pd.DataFrame, out_dir: str | Path,
                    loggers: Sequence[Logger]) -> dict[str, Any]:
    """TSTR, fidelity, privacy and quality of a synthetic table against the datamodule's real splits."""
    from evaluation.report import flat_metrics, to_markdown, utility_rows, write_report
    syn = read_table(synthetic, key="synthetic") if isinstance(synthetic, (str, Path)) else synthetic
    datamodule.setup("fit")
    report = evaluator.run(datamodule.real("train"), datamodule.real("test"), syn, datamodule.schema.kinds(),
                           datamodule.real_identifiers())
    json_path, md_path = write_report(report, out_dir)
    for lg in loggers:
        lg.log_metrics(flat_metrics(report))
    log_table(loggers, "eval/utility", pd.DataFrame(utility_rows(report),
                                                    columns=["learner", "trained on", "AUC", "accuracy"]))
    print("\n" + to_markdown(report), flush=True)
    return {"report": str(json_path), "report_md": str(md_path)}


def wandb_location(loggers: Sequence[Logger]) -> str | None:
    try:
        return run_location(loggers)
    except Exception as e:  # noqa: BLE001 - a summary line must never fail the run
        log.warning("could not read the W&B run location: %s", e)
        return None


def print_summary(summary: dict[str, Any]) -> None:
    labels = {"run_dir": "run folder", "checkpoint": "checkpoint", "synthetic": "synthetic data",
              "manifest": "manifest", "report": "report (json)", "report_md": "report (markdown)", "wandb": "W&B run"}
    width = max(len(v) for v in labels.values())
    lines = [f"  {labels[k]:<{width}}  {v}" for k, v in summary.items() if k in labels and v]
    print("\nOutputs:\n" + "\n".join(lines), flush=True)
